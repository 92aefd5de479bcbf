"""A transformers causal LM as a reader: batched greedy generation and batched teacher-forced likelihoods.

The model is one of :mod:`rlpc_core.models`' specs (embedded alias, local folder, hub id) and loads on first use,
once per process, shared with every other user of the same model.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterator, Sequence

from ..models import EMBEDDED, load_causal_lm, resolve
from . import Reply

log = logging.getLogger(__name__)


def model_key(spec: str, dtype: str) -> str:
    # Embedded aliases are pinned by sha256, so the alias names the weights wherever the cache folder lives;
    # a local folder is keyed by its absolute path (clear the cache if you overwrite a folder in place).
    name = f"{spec}@{EMBEDDED[spec].sha256}" if spec in EMBEDDED else resolve(spec, pull_if_missing=False)
    return f"{name}|{dtype}"


class TransformersBackend:
    """Greedy generation and likelihoods with a transformers model, ``batch_size`` prompts per forward pass."""

    def __init__(self, spec: str, *, dtype: str = "float32", device: str = "cpu", batch_size: int = 4):
        if spec in EMBEDDED and "transformers" not in EMBEDDED[spec].formats:
            resolve(spec, pull_if_missing=False)  # raises: this alias is a GGUF reader (names llamacpp:)
        self.spec, self.dtype, self.device, self.batch_size = spec, dtype, device, batch_size
        self.identity = model_key(spec, dtype)  # resolves now: a bad spec fails here, not mid-run
        self.description = f"transformers {spec} ({dtype}, {device})"
        self._warned_no_template = False

    def _load(self) -> tuple[Any, Any]:
        return load_causal_lm(self.spec, dtype=self.dtype, device=self.device)

    def render(self, tok: Any, prompts: Sequence[str]) -> list[str]:
        """Each prompt as the single user turn of a chat, ending where the assistant's reply begins."""
        if not tok.chat_template:
            if not self._warned_no_template:
                log.warning("%s has no chat template; the evaluator sends prompts as plain text", self.spec)
                self._warned_no_template = True
            return [p + "\n\n" for p in prompts]
        return list(tok.apply_chat_template([[{"role": "user", "content": p}] for p in prompts],
                                            add_generation_prompt=True, tokenize=False))

    def _batches(self, n: int, cost: Sequence[int]) -> Iterator[list[int]]:
        # Sorting by cost puts prompts of similar length in one batch, so little compute is spent on padding.
        order = sorted(range(n), key=lambda i: -cost[i])
        for i in range(0, n, self.batch_size):
            yield order[i : i + self.batch_size]

    # -- generation
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int,
                 stop: Sequence[str] = ()) -> Iterator[tuple[int, Reply]]:
        for batch in self._batches(len(prompts), [len(p) for p in prompts]):
            t0 = time.perf_counter()
            replies = self._generate_batch([prompts[i] for i in batch], max_new_tokens, stop)
            seconds = (time.perf_counter() - t0) / len(batch)  # a batch's time, shared by its rows
            for i, (text, n_prompt, n_new, finish) in zip(batch, replies):
                yield i, Reply(text=text, prompt_tokens=n_prompt, completion_tokens=n_new, seconds=seconds,
                               finish_reason=finish)

    def _generate_batch(self, prompts: list[str], max_new_tokens: int,
                        stop: Sequence[str]) -> list[tuple[str, int, int, str]]:
        import torch

        model, tok = self._load()
        enc = tok(self.render(tok, prompts), return_tensors="pt", padding=True, padding_side="left",
                  add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id,
                                 stop_strings=list(stop) or None, tokenizer=tok if stop else None)
        # Left padding puts every prompt's end at the same column, so the reply is everything after it. Slicing
        # token ids (not stripping the decoded prompt string) means no prompt or system text can leak through.
        new = out[:, enc["input_ids"].shape[1]:]
        results = []
        for row, mask in zip(new, enc["attention_mask"]):
            ids = [int(t) for t in row if int(t) != tok.pad_token_id]
            text = tok.decode(ids, skip_special_tokens=True)
            finish = "length" if len(ids) >= max_new_tokens else "stop"
            for s in stop:  # generation stops after a stop string; the reply ends before it
                if s in text:
                    text, finish = text.split(s, 1)[0], "stop"
            results.append((text.strip(), int(mask.sum()), len(ids), finish))
        return results

    # -- teacher-forced likelihood
    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[int, float]]:
        for batch in self._batches(len(pairs), [len(p) + len(t) for p, t in pairs]):
            for i, value in zip(batch, self._loglikelihood_batch([pairs[i] for i in batch])):
                yield i, value

    def _loglikelihood_batch(self, pairs: list[tuple[str, str]]) -> list[float]:
        import torch

        model, tok = self._load()
        prefixes = [tok(p, add_special_tokens=False)["input_ids"] for p in self.render(tok, [p for p, _ in pairs])]
        targets = [tok(t, add_special_tokens=False)["input_ids"] for _, t in pairs]
        rows = [p + t for p, t in zip(prefixes, targets)]
        width, t_max = max(map(len, rows)), max(map(len, targets))
        # Left padding aligns every target's end at the right edge, so the logits of the last t_max + 1 positions
        # cover every target: logits_to_keep skips the vocabulary projection for all the prompt positions.
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        # Positions count real tokens only, so a padded row is scored exactly as it would be alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = model.device
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                           logits_to_keep=t_max + 1).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -t_max:].to(device).unsqueeze(-1)).squeeze(-1)
        lengths = torch.tensor([len(t) for t in targets], device=device)
        is_target = torch.arange(t_max, device=device).unsqueeze(0) >= (t_max - lengths).unsqueeze(1)
        means = (logprobs * is_target).sum(-1) / lengths
        return [float(v) for v in means.cpu()]


__all__ = ["TransformersBackend", "model_key"]
