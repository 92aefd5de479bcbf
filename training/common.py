"""What SFT and GRPO share: the policy's prompt for a training row, the policy model with its LoRA adapter, the
compressor checkpoint file, run folders and the device.

The policy's prompt is built by :func:`rlpc_core.policy_messages` with the word budget computed exactly as
:class:`rlpc_core.Compressor` computes it at inference (same tokenizer, same rounding), so a trained adapter
sees at inference the prompt it was trained on.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from training.recipe import Recipe

#: Tasks a policy can be trained on: they have gold answers for the evaluator rewards.
TRAINABLE_TASKS = ("math", "qa", "prompt", "mc")


class TrainingError(ValueError):
    """A run cannot start as asked; the message names the value, the rule and the fix."""


# ---------------------------------------------------------------- prompts

class PromptBuilder:
    """The chat the policy answers for a text, with the Compressor's own word budget at ``rate``."""

    def __init__(self, recipe: Recipe):
        from rlpc_core import Compressor

        config = recipe.compressor_config()  # what the saved compressor runs with
        self.config = config.generative
        self.rate = recipe.target_rate
        # the word budget in the policy's prompt comes from the same token counter, exactly as the Compressor's
        self.counter = Compressor(tokenizer=config.tokenizer).counter

    def target_words(self, text: str, rate: Optional[float] = None) -> int:
        """Words the policy may use: ``Compressor._compress_one``'s arithmetic (tokens budget -> word share)."""
        from rlpc_core.words import split_words

        words = split_words(text)
        original = int(self.counter.word_costs(words).sum())
        if original == 0:
            return 1
        budget = max(1, int(round((self.rate if rate is None else rate) * original)))
        return max(1, int(round(len(words) * budget / original)))

    def messages(self, text: str, query: Optional[str] = None, target_words: Optional[int] = None) -> list[dict]:
        from rlpc_core import policy_messages

        n = self.target_words(text) if target_words is None else target_words
        return policy_messages(text, target_words=n, config=self.config, query=query)


# ---------------------------------------------------------------- data

def training_examples(recipe: Recipe, limit: Optional[int] = None) -> list[Any]:
    """The recipe's training rows (:class:`training.data.Example`), shuffled with the data seed; with several
    datasets (``gsm8k+squad``), up to ``limit`` rows of each, shuffled together."""
    import random

    from training.data import load

    d = recipe.data
    rows = []
    for name in d.datasets:
        rows += load(name, split=d.split, limit=limit if limit is not None else d.limit, seed=recipe.data_seed,
                     data_dir=d.data_dir)
    if len(d.datasets) > 1:
        random.Random(recipe.data_seed).shuffle(rows)
    bad = sorted({r.task for r in rows} - set(TRAINABLE_TASKS))
    if bad:
        raise TrainingError(f"data.dataset={d.dataset!r} has rows of task {bad}, which have no gold answer to train "
                            f"on; use a dataset of task {' or '.join(TRAINABLE_TASKS)} (e.g. gsm8k)")
    return rows


def gold_of(example: Any) -> Any:
    """The ``answer`` column: GSM8K's full solution for math (what answer_likelihood scores), the answers for qa."""
    if example.task == "math":
        return example.solution if example.solution else (example.answers[0] if example.answers else None)
    return list(example.answers)


# ---------------------------------------------------------------- the policy model

def policy_device(recipe_section: Any) -> str:
    """``cpu`` or this process's accelerator device (``cuda:N`` under accelerate launch)."""
    import torch

    if getattr(recipe_section, "use_cpu", False) or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def lora_config(recipe: Recipe) -> Any:
    from peft import LoraConfig

    lora = recipe.policy.lora
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), task_type="CAUSAL_LM", bias="none")


def check_target_modules(model: Any, recipe: Recipe) -> None:
    """Every LoRA target names a linear layer of the model, or a clear error listing the ones it has."""
    import torch

    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in recipe.policy.lora.target_modules if t not in linear]
    if missing:
        arch = type(model).__name__
        hint = (" (Phi-3 fuses q/k/v into qkv_proj and gate/up into gate_up_proj)" if "Phi3" in arch else "")
        raise TrainingError(f"policy.lora.target_modules names {missing}, which {arch} does not have{hint}; its "
                            f"linear layers are {sorted(linear)}: set e.g. --set policy.lora.target_modules=[...]")


def load_policy(recipe: Recipe, *, init: Optional[Path] = None) -> tuple[Any, Any]:
    """(model, tokenizer) to train: the base model in the recipe's dtype, with ``init``'s LoRA adapter loaded
    trainable when given (continuing an SFT warm-up); without ``init`` the trainer adds a fresh adapter."""
    from rlpc_core.models import load_causal_lm

    model, tok = load_causal_lm(recipe.policy.model, dtype=recipe.policy.dtype, shared=False)
    check_target_modules(model, recipe)
    if init is not None:
        from peft import PeftModel

        check_init(init, recipe)
        model = PeftModel.from_pretrained(model, str(init), is_trainable=True)
    model.config.use_cache = False  # training forward passes; generation turns it on where it helps
    return model, tok


def check_init(init: Path, recipe: Recipe) -> None:
    """``--init`` must be an adapter over the recipe's base model (an SFT output folder)."""
    init = Path(init)
    if not (init / "adapter_config.json").is_file():
        raise TrainingError(f"--init {str(init)!r} holds no LoRA adapter (adapter_config.json); pass the --out "
                            "folder of python -m training.sft")
    saved = init / "rlpc.json"
    if saved.is_file():
        model = json.loads(saved.read_text())["config"]["generative"]["model"]
        if model != recipe.policy.model:
            raise TrainingError(f"--init {str(init)!r} is an adapter for {model!r}, but policy.model is "
                                f"{recipe.policy.model!r}; use the same base model (--set policy.model={model})")


def save_compressor(out: Path, recipe: Recipe) -> Path:
    """Write ``rlpc.json`` so ``Compressor.from_pretrained(out)`` loads the policy saved in ``out`` (base + the
    LoRA adapter for the generative policy; the adapter and head for the extractive one)."""
    from rlpc_core import Compressor

    checkpoint = str(out) if recipe.policy.kind == "extractive" else None
    return Compressor(recipe.compressor_config(), checkpoint=checkpoint).save_pretrained(out)


# ---------------------------------------------------------------- run folders

def write_json(path: Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def quiet_libraries() -> None:
    """Keep the console to progress bars and our own lines."""
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("httpx", "urllib3", "filelock", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*use_cache=True.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def command_line() -> str:
    """The command as a user would type it again: ``python -m training.<module> ARGS`` (sys.argv[0] is a path)."""
    import shlex
    import sys

    module = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "?"
    return " ".join(["python -m", f"training.{module}", *(shlex.quote(a) for a in sys.argv[1:])])


def say(message: str) -> None:
    if is_main_process():
        print(message, flush=True)


def precompute_original_side(funcs: Sequence[Callable], rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Fill the evaluator cache with its outputs on the original texts of ``rows``, with a progress bar.

    ``answer_likelihood`` needs log p(gold | original) per row (one forward pass each); ``answer_agreement``
    needs the evaluator's answer to the original (one generation each). Cached entries cost nothing.
    """
    from tqdm.auto import tqdm

    from rlpc_core.evaluator import TASKS, build_prompt
    from rlpc_core.rewards import gold_target

    done: dict[str, int] = {}
    seen = set()
    for fn in funcs:
        ev = getattr(fn, "evaluator", None)
        # reader_accuracy scores the compressed prompt's answer against the gold alone: no original side
        if ev is None or fn.__name__ == "reader_accuracy":
            continue
        kind = "answers" if hasattr(fn, "agreement_weight") else "likelihood"
        if (id(ev), kind) in seen:
            continue
        seen.add((id(ev), kind))
        if ev.cache is None:
            say(f"evaluator {ev.model_spec!r} has no cache (evaluator.cache: false): original-side outputs will be "
                "recomputed at every step")
            continue
        chunk = ev.batch_size * 8
        items = []
        for row in rows:
            q = row.get("question") if TASKS[row["task"]].needs_question else None
            if kind == "likelihood":
                target = gold_target(row["task"], row["answer"])
                if target is not None:
                    items.append((build_prompt(row["task"], row["original"], q), target))
            else:
                items.append((row["task"], row["original"], q))
        bar = tqdm(total=len(items), desc=f"evaluator {kind} on original prompts", unit="row",
                   disable=not is_main_process())
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            if kind == "likelihood":
                ev.loglikelihood([p for p, _ in part], [t for _, t in part])
            else:
                for task in dict.fromkeys(t for t, _, _ in part):
                    sel = [(x, q) for t, x, q in part if t == task]
                    qs = [q for _, q in sel] if any(q is not None for _, q in sel) else None
                    ev.answer(task, [x for x, _ in sel], qs)
            bar.update(len(part))
        bar.close()
        done[f"{fn.__name__}:{kind}"] = len(items)
    return done


__all__ = ["PromptBuilder", "TrainingError", "check_init", "check_target_modules", "gold_of",
           "is_main_process", "command_line", "load_policy", "lora_config", "policy_device", "precompute_original_side",
           "quiet_libraries", "save_compressor", "say", "training_examples", "write_json", "write_text"]
