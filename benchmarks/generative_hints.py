"""The graph's importance hints in the rewriting policy's prompt: none vs list vs markers (a benchmark, not a test).

    python benchmarks/generative_hints.py --checkpoints runs/smollm2-sft,runs/smollm2-grpo --limit 30 \\
        --out benchmarks/results/generative_hints

For the untrained base model (``--base``, default the embedded SmolLM2-135M-Instruct) and each checkpoint, every
hint mode (``GenerativeConfig.hints``) compresses the same held-out GSM8K test questions at ``--rate``. Figures
per (model, hints): how often the rewrite itself was usable (the rest fell back to the graph policy, with the
reasons counted), the achieved ratio of the usable rewrites, and the rewards of the registry on them
(``protected_coverage``, ``fidelity`` with the MiniLM feedback model, ``answer_likelihood`` with the SmolLM2
evaluator). Checkpoints were trained with one mode (``list`` in the CPU recipe): their other modes show how much
the adapter leans on the hints it was trained with; the base model shows the hints' effect without training.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("none", "list", "markers")


def measure(compressor: Any, examples: Sequence[Any], rate: float, funcs: Sequence[Any]) -> dict[str, Any]:
    results = [compressor.compress(e.text, rate=rate) for e in examples]
    used = [(e, r) for e, r in zip(examples, results) if r.fallback is None]
    reasons = Counter(r.fallback.split(":")[0] for r in results if r.fallback)
    out: dict[str, Any] = {"rows": len(examples), "rewrite_used": len(used) / len(examples),
                           "fallback_reasons": dict(reasons),
                           "seconds_mean": float(np.mean([r.seconds for r in results]))}
    if used:
        out["ratio_used"] = float(np.mean([r.ratio for _, r in used]))
        originals = [e.text for e, _ in used]
        texts = [r.text for _, r in used]
        answers = [e.solution for e, _ in used]
        for fn in funcs:
            values = fn(prompts=originals, completions=texts, original=originals, answer=answers,
                        task=["math"] * len(used))
            out[fn.__name__] = float(np.mean([v for v in values if v is not None]))
    # what the user gets (rewrite or fallback), every row
    out["ratio_all"] = float(np.mean([r.ratio for r in results]))
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoints", default="", help="comma-separated generative checkpoint folders")
    p.add_argument("--base", default="smollm2-135m-instruct", help="untrained base model ('' to skip)")
    p.add_argument("--limit", type=int, default=30)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generative_hints")
    args = p.parse_args(argv)

    from rlpc_core import Compressor, build_rewards
    from training.data import load

    examples = load("gsm8k", split="test", limit=args.limit, seed=0, data_dir=args.data_dir)
    funcs, _ = build_rewards([{"name": "protected_coverage"},
                              {"name": "fidelity", "kwargs": {"model": "all-minilm-l6-v2"}},
                              {"name": "answer_likelihood", "kwargs": {"task": "math",
                                                                       "evaluator": "smollm2-135m-instruct"}}])
    models: list[tuple[str, Any]] = []
    if args.base:
        models.append((f"base:{args.base}", lambda h: Compressor(policy="generative",
                                                                 generative={"model": args.base, "hints": h})))
    for folder in [c for c in args.checkpoints.split(",") if c]:
        models.append((Path(folder).name, lambda h, f=folder: Compressor.from_pretrained(f, generative={"hints": h})))
    results: dict[str, dict[str, Any]] = {}
    for name, make in models:
        for mode in MODES:
            results[f"{name}|{mode}"] = measure(make(mode), examples, args.rate, funcs)
            print(name, mode, json.dumps(results[f"{name}|{mode}"]), flush=True)
    command = "python benchmarks/generative_hints.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"command": command, "rate": args.rate, "rows": len(examples), "dataset": "gsm8k test",
               "results": results}
    (args.out / "hints.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    lines = ["# Graph hints in the rewriting policy's prompt", "", f"Command: `{command}`", "",
             f"GSM8K test, first {len(examples)} rows of the seed-0 shuffle, rate {args.rate}. *used*: share of rows "
             "whose rewrite passed the compressor's checks (the others fell back to the graph policy); the rewards "
             "are means over the used rewrites; *ratio (all)* is what a user gets, fallbacks included.", "",
             "| model | hints | rewrite used | ratio (used) | ratio (all) | protected coverage | fidelity | "
             "answer likelihood | fallback reasons |", "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for key, r in results.items():
        name, mode = key.split("|")
        f = lambda k: "–" if r.get(k) is None else f"{r[k]:.3f}"  # noqa: E731
        reasons = "; ".join(f"{k} ({v})" for k, v in r["fallback_reasons"].items()) or "–"
        lines.append(f"| `{name}` | {mode} | {r['rewrite_used']:.2f} | {f('ratio_used')} | {f('ratio_all')} | "
                     f"{f('protected_coverage')} | {f('fidelity')} | {f('answer_likelihood')} | {reasons} |")
    (args.out / "hints.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'hints.json'} and hints.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
