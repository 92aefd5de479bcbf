"""Supervised warm-up of the rewriting policy: trl's SFTTrainer + a peft LoRA adapter on (prompt, compressed) pairs.

    python -m training.sft --recipe smollm2-cpu-gsm8k --out runs/smollm2-sft
    python -m training.sft --recipe phi3-gsm8k --pairs my_pairs.jsonl --out runs/phi3-sft
    python -m training.sft --recipe minilm-extractive --out runs/minilm-warmup   # extractive: training.extractive

Pairs come from a JSONL file (``--pairs`` or ``warmup.pairs``; one ``{"original": ..., "compressed": ...,
"question": ...}`` per line, question optional) or are bootstrapped (``warmup.pairs: bootstrap``): the graph policy
compresses the recipe's training questions at its target rate, and a pair is kept only where the rewards say it
is good (every protected number kept, compression reward >= ``warmup.min_compression``, clean format). Each pair
becomes a conversational prompt-completion row: the prompt is :func:`rlpc_core.policy_messages` (the one prompt
builder inference uses), told the compressed text's own word count as its budget, and the completion is the
compressed text, so the loss is on the completion only.

``--out`` receives the adapter, ``rlpc.json`` (``Compressor.from_pretrained(out)`` loads it), the pairs used
(``pairs.jsonl``), the recipe, a log and a short card. ``python -m training.grpo --init OUT`` continues from it.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

from training.common import (command_line, is_main_process, load_policy, lora_config, PromptBuilder,
                             quiet_libraries, save_compressor, say, training_examples, TrainingError,
                             write_json, write_text)
from training.data import DataError
from training.recipe import Recipe, RecipeError, recipe_from_args, training_parser


# ---------------------------------------------------------------- pairs

def read_pairs(path: Path) -> list[dict[str, Any]]:
    """User pairs from JSONL: ``original`` and ``compressed`` (non-empty strings), optional ``question``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise TrainingError(f"pairs file {str(path)!r} does not exist; pass a JSONL file with one "
                            '{"original": ..., "compressed": ...} per line, or use warmup.pairs: bootstrap')
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise TrainingError(f"{path}:{n} is not valid JSON ({err}); write one JSON object per line") from err
        for key in ("original", "compressed"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise TrainingError(f"{path}:{n} needs a non-empty string {key!r} (has {sorted(row)}); each line is "
                                    '{"original": ..., "compressed": ..., "question": optional}')
        question = row.get("question")
        if question is not None and not isinstance(question, str):
            raise TrainingError(f"{path}:{n}: question={question!r} must be a string or absent")
        pairs.append({"original": row["original"], "compressed": row["compressed"], "question": question,
                      "source": "file"})
    if not pairs:
        raise TrainingError(f"pairs file {str(path)!r} has no pairs")
    return pairs


def _bootstrap_reward_specs(recipe: Recipe) -> list[dict[str, Any]]:
    """The recipe's own compression / protected_coverage settings (defaults where it lacks them), plus format."""
    specs = {s["name"]: s for s in recipe.reward_specs() if s["name"] in ("compression", "protected_coverage")}
    compression = specs.get("compression", {"name": "compression", "kwargs": {"target_rate": recipe.target_rate}})
    coverage = specs.get("protected_coverage", {"name": "protected_coverage", "kwargs": {}})
    return [{"name": "compression", "kwargs": compression["kwargs"]},
            {"name": "protected_coverage", "kwargs": coverage["kwargs"]}, {"name": "format"}]


def bootstrap_pairs(recipe: Recipe, examples: Optional[Sequence[Any]] = None,
                    compressed: Optional[Sequence[str]] = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Graph-policy compressions of training questions, kept only where the rewards are high.

    Returns ``(kept pairs, stats)``; stats count the candidates, the kept pairs and why the others were dropped.
    ``compressed`` replaces the graph policy's outputs (tests use it to check the filter on known texts).
    """
    from rlpc_core import Compressor
    from rlpc_core import build_rewards

    if examples is None:
        examples = training_examples(recipe, limit=recipe.warmup.bootstrap_rows)
    specs = _bootstrap_reward_specs(recipe)
    funcs, _ = build_rewards(specs)
    tokenizer = specs[0]["kwargs"].get("tokenizer", "words")
    if compressed is None:
        compressor = Compressor(policy="graph", tokenizer=tokenizer)
        queries = [ex.question if ex.task == "qa" else None for ex in examples]
        results = compressor.compress_batch([ex.text for ex in examples], rate=recipe.target_rate, query=queries)
        compressed = [r.text for r in results]
    originals = [ex.text for ex in examples]
    scores = {fn.__name__: fn(prompts=[""] * len(originals), completions=list(compressed), original=originals)
              for fn in funcs}
    kept, dropped = [], Counter()
    for i, ex in enumerate(examples):
        s = {name: values[i] for name, values in scores.items()}
        reasons = []
        if s["protected_coverage"] is None or s["protected_coverage"] < 1.0:
            reasons.append("lost a protected item")
        if s["compression"] is None or s["compression"] < recipe.warmup.min_compression:
            reasons.append(f"compression reward < {recipe.warmup.min_compression}")
        if s["format"] is None or s["format"] < 1.0:
            reasons.append("format")
        if reasons:
            dropped.update(reasons)
            continue
        kept.append({"id": ex.id, "original": ex.text, "compressed": compressed[i],
                     "question": ex.question if ex.task == "qa" else None, "scores": s, "source": "bootstrap"})
    stats = {"candidates": len(examples), "kept": len(kept), "dropped_reasons": dict(dropped),
             "rate": recipe.target_rate, "tokenizer": tokenizer, "min_compression": recipe.warmup.min_compression}
    return kept, stats


def sft_rows(pairs: Sequence[dict[str, Any]], builder: PromptBuilder) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows: the policy's prompt (budget = the pair's own word count) and the
    compressed text as the assistant's reply."""
    rows = []
    for p in pairs:
        n_words = max(1, len(p["compressed"].split()))
        rows.append({"prompt": builder.messages(p["original"], query=p.get("question"), target_words=n_words),
                     "completion": [{"role": "assistant", "content": p["compressed"]}]})
    return rows


# ---------------------------------------------------------------- training

def _jsonl_logger(path: Path):
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return JsonlLog()


def train(recipe: Recipe, out: Path, pairs_path: Optional[Path] = None) -> dict[str, Any]:
    if recipe.policy.kind == "extractive":
        from training.extractive import warmup

        if pairs_path is not None:
            raise TrainingError("--pairs is for the generative policy; the extractive warm-up learns the graph "
                                "policy's keep masks (extractive.warmup_labels)")
        return warmup(recipe, Path(out))
    from datasets import Dataset
    from trl import SFTTrainer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if is_main_process():
        (out / "rlpc.json").unlink(missing_ok=True)  # written again last, once this run's adapter is saved
    source = pairs_path or (None if recipe.warmup.pairs == "bootstrap" else Path(recipe.warmup.pairs))
    started = time.time()
    if source is not None:
        pairs = read_pairs(source)
        stats = {"candidates": len(pairs), "kept": len(pairs), "source": str(source)}
        say(f"pairs: {len(pairs)} from {source}")
    else:
        pairs, stats = bootstrap_pairs(recipe)
        say(f"bootstrapped pairs: kept {stats['kept']} of {stats['candidates']} graph-policy compressions of "
            f"{recipe.data.dataset} {recipe.data.split} questions at rate {recipe.target_rate} "
            f"(dropped: {stats['dropped_reasons'] or 'none'})")
        if not pairs:
            raise TrainingError(f"no bootstrapped pair passed the filter (dropped: {stats['dropped_reasons']}); "
                                "lower warmup.min_compression or raise warmup.bootstrap_rows")
    if is_main_process():
        with open(out / "pairs.jsonl", "w", encoding="utf-8") as fh:
            for p in pairs:
                fh.write(json.dumps(p, ensure_ascii=False) + "\n")
        write_text(out / "recipe.yaml", recipe.to_yaml())
        (out / "sft_log.jsonl").unlink(missing_ok=True)

    builder = PromptBuilder(recipe)
    dataset = Dataset.from_list(sft_rows(pairs, builder))
    model, tok = load_policy(recipe)
    tok.padding_side = "right"  # training pads on the right; generation (inference) sets left itself
    config = recipe.sft.build(out, seed=recipe.seed)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tok,
                         peft_config=lora_config(recipe), callbacks=[_jsonl_logger(out / "sft_log.jsonl")])
    result = trainer.train()
    trainer.save_model(str(out))
    summary = {"recipe_name": recipe.name, "base_model": recipe.policy.model, "pairs": stats,
               "steps": trainer.state.global_step, "train_loss": result.training_loss,
               "train_seconds": round(time.time() - started, 1), "seed": recipe.seed,
               "command": command_line()}
    if trainer.is_world_process_zero():
        write_json(out / "sft_summary.json", summary)
        write_text(out / "README.md", _card(recipe, summary))
        save_compressor(out, recipe)  # rlpc.json last: its presence means the folder is complete
    return summary


def _card(recipe: Recipe, summary: dict[str, Any]) -> str:
    p = summary["pairs"]
    return (f"# rlpc SFT warm-up: {recipe.name}\n\nLoRA adapter over `{recipe.policy.model}` trained with trl's "
            f"SFTTrainer on {p['kept']} (prompt, compressed) pairs ({p.get('source', 'bootstrapped from the graph policy')}"
            f"; {p['candidates']} candidates) for {summary['steps']} steps, seed {recipe.seed}; final train loss "
            f"{summary['train_loss']:.4f}. A starting point for `python -m training.grpo --init <this folder>`, "
            "not a measured compressor.\n\n```python\nfrom rlpc_core import Compressor\n"
            "compressor = Compressor.from_pretrained(\"<this folder>\")\n```\n\n## Recipe\n\n```yaml\n"
            f"{recipe.to_yaml().rstrip()}\n```\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = training_parser("sft", prog="python -m training.sft", description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=Path, default=None, help="JSONL of {original, compressed, question?} pairs "
                   "(default: the recipe's sft.pairs, usually bootstrap)")
    args = p.parse_args(argv)
    quiet_libraries()
    try:
        recipe = recipe_from_args(args, "sft")
        summary = train(recipe, args.out, args.pairs)
    except (RecipeError, TrainingError, DataError) as err:  # each names the value, the rule and the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    say(f"wrote {args.out} ({'adapter + head' if summary.get('policy_kind') == 'extractive' else 'adapter'} + "
        f"rlpc.json): {summary['steps']} steps, loss {summary['train_loss']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
