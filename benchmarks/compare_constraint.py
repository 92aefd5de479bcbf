"""Fixed reward weights vs the fidelity constraint: two GRPO runs, same recipe, seed and steps, compared.

    python -m benchmarks.compare_constraint --recipe smollm2-cpu-gsm8k --init runs/smollm2-sft \\
        --max-steps 40 --out runs/constraint-vs-fixed

Runs ``OUT/constrained`` (``constraint.enabled: true``) and ``OUT/fixed`` (``constraint.enabled: false``: the
constrained reward keeps its recipe weight), then writes ``OUT/comparison.json``, ``OUT/comparison.md`` and
``OUT/comparison.png``: per run, the raw mean of every reward (first and last logged steps), the compression
ratio, the fidelity signal against the target (share of logged steps at or above it), lambda, and the total
reward recomputed with the recipe's base weights (the logged total of the constrained run uses (1 + lambda) x
weight for fidelity, so it is not comparable across the two runs). Both runs see the same rows in the same
order and sample with the same seed, so the difference is the constraint (up to GRPO's sampling divergence
once the policies differ).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from training.card import read_log
from training.common import write_json, write_text
from training.recipe import RecipeError, recipe_from_args, training_parser, trl_overrides

RUNS = (("constrained", "true"), ("fixed", "false"))


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def run_summary(rows: Sequence[dict[str, Any]], base_weights: dict[str, float], fidelity: str, target: float,
                window: int) -> dict[str, Any]:
    """Figures of one run's log.jsonl (see the module docstring)."""
    def base_total(row: dict[str, Any]) -> Optional[float]:
        rewards = row.get("rewards") or {}
        parts = [base_weights[n] * v for n, v in rewards.items() if n in base_weights and v is not None]
        return sum(parts) if parts else None

    window = max(1, min(window, len(rows) // 2))  # first and last windows never overlap
    head, tail = rows[:window], rows[-window:]
    names = list(dict.fromkeys(n for r in rows for n in (r.get("rewards") or {})))
    fid = [(r.get("rewards") or {}).get(fidelity) for r in rows]
    return {
        "steps": rows[-1]["step"] if rows else 0,
        "rewards_first": {n: _mean([(r.get("rewards") or {}).get(n) for r in head]) for n in names},
        "rewards_last": {n: _mean([(r.get("rewards") or {}).get(n) for r in tail]) for n in names},
        "total_at_base_weights_first": _mean([base_total(r) for r in head]),
        "total_at_base_weights_last": _mean([base_total(r) for r in tail]),
        "compression_ratio_first": _mean([r.get("compression_ratio") for r in head]),
        "compression_ratio_last": _mean([r.get("compression_ratio") for r in tail]),
        "fidelity_mean": _mean(fid),
        "fidelity_at_or_above_target_share": _mean([None if v is None else float(v >= target) for v in fid]),
        "lambda_last": _mean([r.get("lambda") for r in tail]),
        "kl_last": _mean([r.get("kl") for r in tail]),
    }


def _fmt(v: Any) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def markdown(result: dict[str, Any]) -> str:
    runs = result["runs"]
    c, f = runs["constrained"], runs["fixed"]
    lines = [f"# Fidelity constraint vs fixed weights: {result['recipe']}", "",
             f"Same recipe, seed {result['seed']}, {result['steps']} steps each; fidelity signal "
             f"`{result['fidelity_reward']}`, target {result['target']}. First/last = mean over the first/last "
             f"{result['window']} logged steps. Training questions only: not a held-out result.", "",
             "| | constrained | fixed |", "|---|---:|---:|"]
    rows = [("total reward at base weights, first", "total_at_base_weights_first"),
            ("total reward at base weights, last", "total_at_base_weights_last"),
            ("compression ratio, first", "compression_ratio_first"),
            ("compression ratio, last", "compression_ratio_last"),
            (f"{result['fidelity_reward']}, mean over the run", "fidelity_mean"),
            (f"share of steps with {result['fidelity_reward']} >= target", "fidelity_at_or_above_target_share"),
            ("lambda, last", "lambda_last"), ("KL, last", "kl_last")]
    for label, key in rows:
        lines.append(f"| {label} | {_fmt(c.get(key))} | {_fmt(f.get(key))} |")
    for name in c["rewards_last"]:
        lines.append(f"| {name}, first → last | {_fmt(c['rewards_first'].get(name))} → "
                     f"{_fmt(c['rewards_last'].get(name))} | {_fmt(f['rewards_first'].get(name))} → "
                     f"{_fmt(f['rewards_last'].get(name))} |")
    lines += ["", "![curves](comparison.png)", "", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def plot(logs: dict[str, list[dict[str, Any]]], fidelity: str, target: float, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("compression ratio", lambda r: r.get("compression_ratio")),
              (fidelity, lambda r: (r.get("rewards") or {}).get(fidelity)),
              ("lambda", lambda r: r.get("lambda"))]
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.6))
    for ax, (label, get) in zip(axes, panels):
        for name, rows in logs.items():
            pts = [(r["step"], get(r)) for r in rows if get(r) is not None]
            if pts:
                ax.plot(*zip(*pts), label=name, linewidth=1.5)
        if label == fidelity:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from training import grpo

    p = training_parser("grpo", prog="python -m benchmarks.compare_constraint", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", type=Path, default=None, help="SFT folder both runs start from")
    p.add_argument("--window", type=int, default=10, help="logged steps averaged for first/last figures")
    args = p.parse_args(argv)
    try:
        recipe = recipe_from_args(args, "grpo")
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not any(r.name == recipe.constraint.reward for r in recipe.rewards):
        print(f"error: constraint.reward={recipe.constraint.reward!r} is not among the rewards", file=sys.stderr)
        return 2
    sets = [*args.overrides, *trl_overrides(args, "grpo")]
    passthrough = ["--recipe", str(args.recipe)] + [x for o in sets for x in ("--set", o)]
    if args.init is not None:
        passthrough += ["--init", str(args.init)]
    logs = {}
    for name, enabled in RUNS:
        out = args.out / name
        code = grpo.main(passthrough + ["--set", f"constraint.enabled={enabled}", "--out", str(out)])
        if code:
            return code
        logs[name] = read_log(out / "log.jsonl")
    base = {}
    for item in recipe.rewards:
        base.setdefault(item.name, item.weight)
    fidelity, target = recipe.constraint.reward, recipe.constraint.target
    result = {"recipe": recipe.name, "seed": recipe.seed, "steps": recipe.grpo.max_steps, "fidelity_reward": fidelity,
              "target": target, "window": args.window, "base_weights": base,
              "runs": {n: run_summary(rows, base, fidelity, target, args.window) for n, rows in logs.items()},
              "command": " ".join(["python -m benchmarks.compare_constraint", *(argv if argv is not None else sys.argv[1:])])}
    write_json(args.out / "comparison.json", result)
    plot(logs, fidelity, target, args.out / "comparison.png")
    write_text(args.out / "comparison.md", markdown(result))
    print(f"wrote {args.out / 'comparison.json'}, comparison.md and comparison.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
