"""The rewriting policy: a causal LM (optionally with a LoRA adapter) rewrites the prompt within a word budget.

The instruction it sees is built by :func:`policy_messages`, the one place that defines it: training (SFT and
GRPO) and inference both call it, so a trained adapter always sees the prompt it was trained on. Importance
hints from the graph are optional (``GenerativeConfig.hints``). What a rewrite may do wrong (drop or invent a
number, chatter, come out longer) is checked by the compressor, which then falls back to the graph policy.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..config import CompressorConfig, GenerativeConfig
from ..graph import STOPWORDS, normalize, score_words
from ..rewrite_rules import strip_chatter

SYSTEM = ("You compress prompts for another language model. Rewrite the user's text as briefly as possible while "
          "keeping every number, name and fact needed to answer its question. Drop filler words. Output only "
          "the compressed text, with no introduction or comment.")


def hint_words(text: str, config: GenerativeConfig, graph_config=None, query: Optional[str] = None) -> list[str]:
    """The words the graph ranks in the top ``hint_share`` (numbers always), in text order, without repeats."""
    words = text.split()
    if not words or config.hints == "none":
        return []
    scored = score_words(words, graph_config, query=query) if graph_config else score_words(words, query=query)
    content = np.array([normalize(w) not in STOPWORDS for w in words])
    k = int(round(config.hint_share * len(words)))
    top = set(np.argsort(-np.where(content, scored.scores, -np.inf), kind="stable")[:k].tolist())
    chosen = [i for i in range(len(words)) if (i in top and content[i]) or scored.protected[i]]
    return list(dict.fromkeys(words[i] for i in chosen))


def policy_messages(text: str, *, target_words: int, config: GenerativeConfig = GenerativeConfig(),
                    query: Optional[str] = None, graph_config=None) -> list[dict[str, str]]:
    """The chat the policy answers: system instruction, then the text, its budget, the question and hints."""
    hints = hint_words(text, config, graph_config, query)
    body = text
    if config.hints == "markers" and hints:
        marked = set(hints)
        body = " ".join(f"@@{w}@@" if w in marked else w for w in text.split())
    lines = [f"Compress this text to at most {target_words} words.", "", "Text:", body]
    if query:
        lines += ["", f"Question it must still answer: {query}"]
    if config.hints == "list" and hints:
        lines += ["", "Important words: " + ", ".join(hints)]
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def clean_rewrite(text: str) -> str:
    """Strip chatter and wrapping a model adds around the rewrite ("Here is the compressed text:", quotes, fences)."""
    return strip_chatter(text).replace("@@", "")  # markers the policy was shown must never reach the downstream LLM


class GenerativePolicy:
    name = "generative"

    def __init__(self, config: CompressorConfig, checkpoint: Optional[str] = None) -> None:
        self.config = config.generative
        self.graph_config = config.graph
        self.checkpoint = checkpoint
        self._model = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the model now (``Compressor.load``), rather than on the first ``rewrite``."""
        self._load()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._model is None:
                self._model = load_policy_model(self.config, self.checkpoint)
            return self._model

    def rewrite(self, text: str, *, target_words: int, query: Optional[str] = None) -> str:
        return self.rewrite_batch([text], target_words=[target_words], queries=[query])[0]

    def rewrite_batch(self, texts: Sequence[str], *, target_words: Sequence[int],
                      queries: Sequence[Optional[str]]) -> list[str]:
        import torch

        model, tok = self._load()
        chats = [policy_messages(t, target_words=n, config=self.config, query=q, graph_config=self.graph_config)
                 for t, n, q in zip(texts, target_words, queries)]
        rendered = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
        batch = tok(rendered, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        # words -> the policy's own tokens: about 1.3 tokens a word in English BPEs, plus room (factor)
        limit = int(max(target_words) * 1.3 * self.config.max_new_tokens_factor) + 8
        with self._lock, torch.inference_mode():  # one generation at a time per policy: the model is shared
            out = model.generate(**batch, max_new_tokens=limit, do_sample=False)
        new = out[:, batch["input_ids"].shape[1]:]  # cut by position: the prompt can never leak into the output
        return [clean_rewrite(t) for t in tok.batch_decode(new, skip_special_tokens=True)]


def load_policy_model(config: GenerativeConfig, checkpoint: Optional[str] = None) -> tuple[Any, Any]:
    """The policy's (model, tokenizer): a base model, a full fine-tuned folder, or a base plus a LoRA adapter."""
    from ..models import load_causal_lm

    folder = Path(checkpoint) if checkpoint else None
    if folder is not None and (folder / "adapter_config.json").is_file():
        from peft import PeftModel  # optional: only adapters need it

        base = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path") or config.model
        model, tok = load_causal_lm(config.model if _is_alias_or_dir(config.model) else base, dtype=config.dtype,
                                    shared=False)
        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()  # merged: plain speed at inference
        model.eval().requires_grad_(False)
        return model, tok
    if folder is not None and (folder / "config.json").is_file():
        return load_causal_lm(str(folder), dtype=config.dtype)
    return load_causal_lm(config.model, dtype=config.dtype)


def _is_alias_or_dir(spec: str) -> bool:
    from ..models import EMBEDDED

    return spec in EMBEDDED or Path(spec).expanduser().is_dir()
