"""Reward curves and the model card of a training run folder.

``python -m training.grpo`` writes both at the end of a run. After the held-out evaluation, regenerate the card
with the measured results in it::

    python -m training.evaluate --dataset gsm8k --split test --methods graph,RUN_DIR,none --out RUN_DIR/eval ...
    python -m training.card RUN_DIR                 # finds RUN_DIR/eval/metrics.json
    python -m training.card RUN_DIR --eval-results path/to/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

CURVES = "reward_curves.png"
LOG = "log.jsonl"
SUMMARY = "training_summary.json"
RUN_FILE = "run.json"  # the command that started a run (and any --resume after it), written by the trainers
EVAL_PLACEHOLDER = "<!-- held-out results: filled by python -m training.card after training.evaluate -->"


def read_log(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def final_means(rows: Sequence[dict[str, Any]], last: int = 10) -> dict[str, float]:
    """Mean of each logged quantity over the last ``last`` logging steps (the end-of-run level, less noisy)."""
    return _window_means(rows[-last:])


def first_means(rows: Sequence[dict[str, Any]], first: int = 10) -> dict[str, float]:
    return _window_means(rows[:first])


def _window_means(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, list[float]] = {}
    for row in rows:
        for key, value in _flat(row).items():
            if key not in ("step", "time", "epoch") and isinstance(value, (int, float)) and math.isfinite(value):
                out.setdefault(key, []).append(float(value))
    return {k: sum(v) / len(v) for k, v in out.items()}


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    flat = {k: v for k, v in row.items() if k != "rewards"}
    for name, value in (row.get("rewards") or {}).items():
        flat[f"rewards/{name}"] = value
    return flat


def _by_rate(rows: Sequence[dict[str, Any]]) -> list[tuple[Optional[float], list[dict[str, Any]]]]:
    """The log's rows per target rate (a run that draws a rate per step logs one series per rate: means over
    mixed rates describe no compressor), or all rows as one series."""
    rates = sorted({r["rate"] for r in rows if isinstance(r.get("rate"), (int, float))})
    if len(rates) < 2:
        return [(rates[0] if rates else None, list(rows))]
    return [(rate, [r for r in rows if r.get("rate") == rate]) for rate in rates]


def plot_reward_curves(rows: Sequence[dict[str, Any]], png: Path, title: str = "") -> Optional[Path]:
    """Per-reward means, the weighted total, KL and the constraint's lambda against the step (matplotlib Agg);
    one row of panels per target rate when the run trains at several."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _by_rate(rows)
    names = list(dict.fromkeys(n for r in rows for n in (r.get("rewards") or {})))

    def panels_of(rs: Sequence[dict[str, Any]]) -> list[tuple[str, list[tuple[str, list[Any]]]]]:
        panels = [("per-reward mean", [(n, [(r.get("rewards") or {}).get(n) for r in rs]) for n in names]),
                  ("total reward (weighted)", [("reward", [r.get("reward") for r in rs])])]
        if any(r.get("compression_ratio") is not None for r in rows):
            panels.append(("compression ratio", [("ratio", [r.get("compression_ratio") for r in rs])]))
        panels.append(("KL to the starting policy", [("kl", [r.get("kl") for r in rs])]))
        if any(r.get("lambda") is not None for r in rows):
            panels.append(("fidelity constraint", [("lambda", [r.get("lambda") for r in rs]),
                                                   ("observed", [r.get("observed") for r in rs])]))
        return panels

    n_cols = len(panels_of(rows[:1]))
    fig, axes = plt.subplots(len(groups), n_cols, figsize=(4.6 * n_cols, 3.6 * len(groups)), squeeze=False)
    for row_axes, (rate, rs) in zip(axes, groups):
        steps = [r["step"] for r in rs]
        for ax, (label, series) in zip(row_axes, panels_of(rs)):
            for name, values in series:
                xs = [s for s, v in zip(steps, values) if v is not None]
                ys = [v for v in values if v is not None]
                if not ys:
                    continue
                line, = ax.plot(xs, ys, alpha=0.35, linewidth=1)
                smooth = _moving_average(ys, max(1, len(ys) // 15))
                ax.plot(xs, smooth, color=line.get_color(), linewidth=2, label=name)
            ax.set_title(label if len(groups) == 1 else f"{label} (rate {rate:g})", fontsize=10)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            if len(series) > 1:
                ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _moving_average(values: Sequence[float], k: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= k:
            total -= values[i - k]
        out.append(total / min(i + 1, k))
    return out


# ---------------------------------------------------------------- held-out results

def find_eval_results(run_dir: Path, given: Optional[Path] = None) -> Optional[Path]:
    """A training.evaluate ``metrics.json``: the one given (file or folder), else ``RUN_DIR/eval/metrics.json``."""
    for candidate in ([Path(given)] if given else []) + [Path(run_dir) / "eval"]:
        path = candidate / "metrics.json" if candidate.is_dir() else candidate
        if path.is_file():
            return path
    if given:
        raise ValueError(f"--eval-results {str(given)!r} is not a metrics.json (or a folder holding one); pass the "
                         "--out folder of python -m training.evaluate")
    return None


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, dict):
        value = value.get("mean")
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _same_data(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_file() and pb.is_file() and pa.resolve() == pb.resolve()


def _trained_on(summary: Mapping[str, Any]) -> list[str]:
    """The dataset specs a run trained on (the recipe's ``data.dataset``, several joined by ``+``)."""
    return [p.strip() for p in str(summary.get("dataset", "")).split("+") if p.strip()]


def held_out_note(dataset: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """What the evaluated rows are to this run: held out, or its own training rows (then said plainly)."""
    name, split = str(dataset.get("name", dataset.get("spec", "?"))), dataset.get("split")
    if not any(_same_data(name, t) for t in _trained_on(summary)):
        return "rows from data this run did not train on"
    from training.data import NAMED

    # a named set's held-out split is disjoint from its train split; a file has no splits, so it is the same rows
    if name in NAMED and split is not None and split != summary.get("split", "train"):
        return "rows never used in training (a held-out split of a training set)"
    return ("**the run's own training rows: this is not a held-out figure**; evaluate on rows it never saw "
            "for one")


def eval_markdown(metrics_path: Path, summary: Optional[Mapping[str, Any]] = None) -> str:
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    dataset = metrics.get("dataset", {})
    lines = [f"Measured by `python -m training.evaluate` ({metrics_path}); dataset "
             f"`{dataset.get('name', dataset.get('spec', '?'))}`, split `{dataset.get('split', '?')}`, "
             f"{dataset.get('rows', dataset.get('n', '?'))} {held_out_note(dataset, summary or {})}.", "",
             "| method | rate | rows | ratio | all numbers kept | answer survival | likelihood Δ | fidelity | "
             "agreement (sample) | accuracy orig → comp (sample) | fallbacks | ms / 1k tokens (p50) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in metrics.get("aggregates", []):
        gen = a.get("generation") or {}
        acc = "–"
        if gen.get("accuracy_original") is not None:
            acc = f"{_fmt(gen.get('accuracy_original'), 2)} → {_fmt(gen.get('accuracy_compressed'), 2)}"
        agreement = f"{_fmt(gen.get('agreement'), 2)} (n={gen['n']})" if gen else "–"
        latency = (a.get("latency_ms_per_1k") or {}).get("p50")
        lines.append(f"| {a.get('method')} | {a.get('rate')} | {a.get('n')} | {_fmt(a.get('ratio_mean'))} | "
                     f"{_fmt(a.get('all_numbers_kept'))} | {_fmt(a.get('answer_survival'))} | "
                     f"{_fmt(a.get('likelihood_delta'))} | "
                     f"{_fmt(a.get('fidelity'))} | {agreement} | {acc} | {a.get('fallbacks', '–')} | "
                     f"{_fmt(latency, 0)} |")
    from training.downstream import reader_table

    reader = reader_table(metrics)
    if reader:
        spec = (metrics.get("reader") or {}).get("spec")
        lines += ["", f"Reader `{spec}` (a reader training never asked, where it differs from the training reader): its accuracy on the compressed prompt and the accuracy it loses against the "
                  "uncompressed prompt (paired bootstrap 95% CIs):", "", *reader]
    return "\n".join(lines)


# ---------------------------------------------------------------- the card

def model_card(run_dir: Path, recipe_yaml: str, summary: dict[str, Any],
               eval_path: Union[Path, Sequence[Path], None]) -> str:
    groups = _by_rate(read_log(Path(run_dir) / LOG))
    means = [(rate, first_means(rs), final_means(rs)) for rate, rs in groups]
    keys = dict.fromkeys(k for _, _, final in means for k in final)
    reward_keys = [k for k in keys if k.startswith("rewards/")] + [k for k in ("reward", "compression_ratio", "kl",
                                                                                "lambda", "observed") if k in keys]
    if len(groups) == 1:
        head = ["| quantity | first 10 logged steps | last 10 logged steps |", "|---|---:|---:|"]
    else:
        head = ["| quantity | " + " | ".join(f"rate {rate:g}: first 10 | rate {rate:g}: last 10" for rate, _ in groups)
                + " |", "|---|" + "---:|" * (2 * len(groups))]
    table = head + [f"| {key} | " + " | ".join(f"{_fmt(first.get(key))} | {_fmt(final.get(key))}"
                                                for _, first, final in means) + " |" for key in reward_keys]
    eval_paths = [eval_path] if isinstance(eval_path, (str, Path)) else list(eval_path or [])
    if eval_paths:
        held_out = "\n\n".join(eval_markdown(p, summary) for p in eval_paths)
    else:
        from training.data import NAMED

        named = all(p in NAMED for p in _trained_on(summary))
        where = ("held-out GSM8K test questions" if named else
                 "rows of your own that this run never trained on (not the training file)")
        spec = "gsm8k --split test" if named else "YOUR_HELDOUT_ROWS.jsonl"
        held_out = ("**Not measured yet.** Training rewards above are on training questions; they are not a "
                    f"quality claim. Measure on {where}, then regenerate this card:\n\n"
                    "```bash\n"
                    f"python -m training.evaluate --dataset {spec} --methods graph,{run_dir},none "
                    f"--rate {_rates(summary.get('target_rate', 0.5))} --limit 200 --out {run_dir}/eval\n"
                    f"python -m training.card {run_dir}\n```")
    s = summary
    init = s.get("init") or "none (a fresh LoRA adapter)"
    return f"""{_header(run_dir, s)}

## Training

| | |
|---|---|
| base model | `{s.get('base_model')}` (dtype {s.get('dtype')}) |
| started from | {init} |
| data | `{s.get('dataset')}` split `{s.get('split')}`, {s.get('train_rows')} rows (seed {s.get('data_seed')}); held-out splits of the named sets are refused |
| rewards (weights) | {s.get('rewards')} |
| reward's evaluator | {_reward_reader(recipe_yaml)} |
| fidelity constraint | {s.get('constraint')} |
| steps | {s.get('steps_done')} of {s.get('steps')} ({s.get('prompts_per_step')} prompts x G={s.get('num_generations')} per step) |
| seed | {s.get('seed')} |
| time | {_time_row(s)} |
| software | {s.get('versions')} |
| command | {_command_row(run_dir, s)} |

Reward means (training questions; `rewards/*` are the raw per-reward means trl logs, `reward` the weighted total,
`lambda` the fidelity constraint's multiplier):

{chr(10).join(table)}
{_rate_note(s)}
![reward curves]({CURVES})

## Held-out results

{EVAL_PLACEHOLDER}
{held_out}

## Recipe

```yaml
{recipe_yaml.rstrip()}
```
"""


def _rate_note(s: dict[str, Any]) -> str:
    if not isinstance(s.get("target_rate"), (list, tuple)):
        return ""
    return ("\nEach step draws one of the rates for all its prompts; the means and curves are per rate (the first "
            "and last 10 logged steps *at that rate*). They are on training questions: the held-out results below "
            "are the before/after comparison.\n")


def _keeps(s: dict[str, Any]) -> str:
    if s.get("action") != "blocks":
        return "the compressor keeps the best-scoring words within the budget and every protected word"
    return ("the shared selection keeps whole sentences (and meaning units) in the order of their value, which holds "
            "the policy's block scores, within the budget, and every protected word")


def _action(s: dict[str, Any]) -> str:
    if s.get("action") != "blocks":
        return ", one action per word"
    return (", one action per sentence or demonstration (the shared selection makes each sampled choice real, as "
            "it does at inference; math problems stay word-level)")


def _reward_reader(recipe_yaml: str) -> str:
    """The evaluator the rewards asked (a held-out benchmark should judge with another reader: the card says so)."""
    import yaml

    try:
        model = ((yaml.safe_load(recipe_yaml) or {}).get("evaluator") or {}).get("model")
    except yaml.YAMLError:
        model = None
    if not model:
        return "the recipe's default"
    return f"`{model}` (judge held-out rows with another reader, e.g. `llamacpp:qwen2.5-coder-1.5b-instruct`)"


def _rates(rate: Any) -> str:
    return ",".join(str(r) for r in rate) if isinstance(rate, (list, tuple)) else str(rate)


def _resumed_at(s: dict[str, Any]) -> Optional[int]:
    """The step a resumed session started from (None for a run done in one session)."""
    done, this = s.get("steps_done"), s.get("steps_this_session")
    return int(done) - int(this) if done is not None and this is not None and this < done else None


def _time_row(s: dict[str, Any]) -> str:
    # A resumed session only timed its own steps: saying so beats passing them off as the whole run's time.
    timing = f"{_fmt(s.get('train_seconds'), 0)} s ({_fmt(s.get('seconds_per_step'), 2)} s/step) on {s.get('device')}"
    start = _resumed_at(s)
    return timing if start is None else f"{timing}, steps {start + 1}-{s.get('steps_done')} only (resumed at step {start})"


def _command_row(run_dir: Path, s: dict[str, Any]) -> str:
    """The command that started the run, and the one that finished it when a session resumed it."""
    run_file = Path(run_dir) / RUN_FILE
    first = json.loads(run_file.read_text(encoding="utf-8")).get("command") if run_file.is_file() else None
    last = s.get("command")
    if first and _resumed_at(s) is not None and first != last:
        return f"`{first}`; resumed with `{last}`"
    return f"`{last}`"


def _header(run_dir: Path, s: dict[str, Any]) -> str:
    """Front matter, title and how to load: what differs between the two policy kinds."""
    if s.get("policy_kind") == "extractive":
        rates = s.get("target_rate")
        return f"""---
library_name: rlpc
base_model: {s.get('base_model')}
tags: [rlpc, prompt-compression, grpo, token-classification, lora]
---

# rlpc extractive compressor: {s.get('recipe_name')}

A LoRA adapter and a keep/drop head over `{s.get('base_model')}` that score every word of a prompt (the
question beside it, the importance graph's features with it) in one forward pass; {_keeps(s)}, so the output is an
order-preserving subsequence of the input: nothing is invented. Trained with group-relative policy gradients (`python -m training.grpo`,
`training/extractive.py`) at rates {rates}{_action(s)}. Weights: `extractive.safetensors` (adapter + head only; the base
is the embedded MiniLM). Load it through the one inference entry point:

```python
from rlpc_core import Compressor
compressor = Compressor.from_pretrained("{run_dir}")
result = compressor.compress(context, rate=0.5, query=question)
```
"""
    return f"""---
library_name: peft
base_model: {s.get('base_model')}
tags: [rlpc, prompt-compression, grpo, trl, lora]
---

# rlpc generative compressor: {s.get('recipe_name')}

A LoRA adapter over `{s.get('base_model')}` that rewrites a prompt to about {s.get('target_rate')} of its tokens,
trained with trl's GRPOTrainer (`python -m training.grpo`). Load it through the one inference entry point:

```python
from rlpc_core import Compressor
compressor = Compressor.from_pretrained("{run_dir}")
result = compressor.compress(prompt, rate={s.get('target_rate')})  # falls back to the graph policy, and says so,
                                                                 # when a rewrite drops or invents a number
```
"""


def write_card(run_dir: Path, eval_results: Union[Path, Sequence[Path], None] = None) -> Path:
    """(Re)write ``RUN_DIR/README.md`` and the curves from the run's log, summary and recipe."""
    from training.common import write_text

    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY
    if not summary_path.is_file():
        raise ValueError(f"{str(run_dir)!r} has no {SUMMARY}: pass the --out folder of a finished "
                         "python -m training.grpo run")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    recipe_yaml = (run_dir / "recipe.yaml").read_text(encoding="utf-8")
    plot_reward_curves(read_log(run_dir / LOG), run_dir / CURVES, title=summary.get("recipe_name", ""))
    given = [eval_results] if isinstance(eval_results, (str, Path)) else list(eval_results or [None])
    found = [find_eval_results(run_dir, g) for g in given]
    card = model_card(run_dir, recipe_yaml, summary, [f for f in found if f is not None])
    write_text(run_dir / "README.md", card)
    return run_dir / "README.md"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.card", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="the --out folder of python -m training.grpo")
    p.add_argument("--eval-results", type=Path, action="append", default=None,
                   help="metrics.json of python -m training.evaluate (repeatable; default: RUN_DIR/eval/metrics.json "
                        "if present)")
    args = p.parse_args(argv)
    try:
        path = write_card(args.run_dir, args.eval_results)
    except ValueError as err:
        p.error(str(err))
    print(f"wrote {path} and {args.run_dir / CURVES}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
