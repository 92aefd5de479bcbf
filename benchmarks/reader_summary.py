"""One table across datasets: the accuracy a capable reader loses on each method's compressed prompts.

    python -m benchmarks.reader_summary benchmarks/results/reader [--readme README.md] [--reference graph]
    python -m benchmarks.reader_summary benchmarks/results/reader-after --before benchmarks/results/reader \
        --before-methods graph,extractive

Reads every ``*/metrics.json`` + ``rows.jsonl`` under the folder (runs of ``python -m training.evaluate --reader``)
and writes ``summary.json``, ``summary.md`` and ``summary.png`` there: per dataset and rate, accuracy lost against
the uncompressed prompt (paired per row, 95% bootstrap CI); pooled over the QA datasets; and each method against a
reference method (default ``graph``) on the same rows. ``--before FOLDER`` (repeatable) adds the named methods of an earlier run
of the same datasets (same rows, same reader) as ``METHOD (before)``, so a change is read side by side with its
paired difference. With ``--readme`` the block between ``<!-- reader:start -->`` and ``<!-- reader:end -->`` in that
file is replaced by the Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from training.rates import rate_key, rate_label

START, END = "<!-- reader:start -->", "<!-- reader:end -->"
NONE = "none"
QA_TASKS = ("qa", "mc")
ORDER = ("squad", "nq", "squad-multi", "nq-20docs", "gsm8k", "gsm8k-fewshot")


def _rows(folder: Path) -> list[dict[str, Any]]:
    path = folder / "rows.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def add_before(runs: list[dict[str, Any]], before: list[dict[str, Any]], methods: Sequence[str]) -> None:
    """Put ``methods`` of the earlier runs into the matching runs as ``METHOD (before)`` (rows and aggregates)."""
    by_name = {r["name"]: r for r in before}
    for run in runs:
        old = by_name.get(run["name"])
        if old is None:
            continue
        ids = {r["id"] for r in run["rows"]}
        for m in methods:
            label = f"{m} (before)"
            if label in run["metrics"]["config"]["methods"]:  # an earlier --before folder gave it already
                continue
            rows = [dict(r, method=label) for r in old["rows"] if r["method"] == m and r["id"] in ids]
            if not rows:  # the earlier run did not measure this method: no empty "(before)" line
                continue
            run["rows"] += rows
            run["metrics"]["aggregates"] += [dict(a, method=label) for a in old["metrics"]["aggregates"]
                                             if a["method"] == m]
            if label not in run["metrics"]["config"]["methods"]:
                run["metrics"]["config"]["methods"].append(label)


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every run under ``root`` that measured a reader: its metrics and its rows."""
    runs = []
    for mpath in sorted(root.glob("*/metrics.json")):
        metrics = json.loads(mpath.read_text(encoding="utf-8"))
        reader = metrics.get("reader") or {}
        if not reader.get("spec") or reader.get("skipped"):
            continue
        runs.append({"name": mpath.parent.name, "folder": mpath.parent, "metrics": metrics, "rows": _rows(mpath.parent)})
    runs.sort(key=lambda r: (ORDER.index(r["name"]) if r["name"] in ORDER else len(ORDER), r["name"]))
    return runs


def _paired(rows: Sequence[dict[str, Any]], method: str, reference: str, rate: float, seed: int,
            lost: bool) -> Optional[dict[str, Any]]:
    """Per-row paired difference on reader accuracy: ``original - method`` (lost) or ``method - reference``."""
    from training.stats import bootstrap_ci

    if lost:
        diffs = [r["reader_accuracy_original"] - r["reader_accuracy"] for r in rows
                 if r["method"] == method and r["rate"] == rate and r.get("reader_accuracy") is not None]
    else:
        ref = {(r["id"], r.get("_run")): r for r in rows if r["method"] == reference and r["rate"] == rate}
        diffs = []
        for r in rows:
            other = ref.get((r["id"], r.get("_run")))
            if r["method"] == method and r["rate"] == rate and other is not None and r.get("reader_accuracy") is not None:
                diffs.append(r["reader_accuracy"] - other["reader_accuracy"])
    ci = bootstrap_ci(diffs, seed)
    if ci is not None:
        ci.update(worse=int(sum(d > 0 for d in diffs)) if lost else int(sum(d < 0 for d in diffs)),
                  better=int(sum(d < 0 for d in diffs)) if lost else int(sum(d > 0 for d in diffs)))
    return ci


def summarize(runs: Sequence[dict[str, Any]], *, reference: str = "graph", seed: int = 0) -> dict[str, Any]:
    methods = list(dict.fromkeys(m for run in runs for m in run["metrics"]["config"]["methods"] if m != NONE))
    rates = sorted({rate for run in runs for rate in run["metrics"]["config"]["rates"]}, key=rate_key)
    per_dataset: dict[str, Any] = {}
    for run in runs:
        entry: dict[str, Any] = {"rows": run["metrics"]["dataset"]["rows"], "task": run["metrics"]["dataset"]["task"],
                                 "reader": run["metrics"]["reader"]["spec"], "methods": {}}
        for a in run["metrics"]["aggregates"]:
            rd = a.get("reader")
            if not rd:
                continue
            e2e = rd.get("end_to_end") or {}
            entry["methods"].setdefault(a["method"], {})[str(a["rate"])] = {
                "ratio": a["ratio_mean"], "accuracy": rd["accuracy"], "accuracy_original": rd["accuracy_original"],
                "accuracy_lost": rd["accuracy_lost"], "speedup": e2e.get("speedup"), "scorer": a.get("scorer"),
                "vs_reference": (None if a["method"] in (reference, NONE) else
                                 _paired(run["rows"], a["method"], reference, a["rate"], seed, lost=False))}
        per_dataset[run["name"]] = entry
    pooled: dict[str, Any] = {}
    qa_runs = [run for run in runs if run["metrics"]["dataset"]["task"] in QA_TASKS]
    if qa_runs:
        rows = [dict(r, _run=run["name"]) for run in qa_runs for r in run["rows"]]
        for m in methods:
            for rate in rates:
                lost = _paired(rows, m, reference, rate, seed, lost=True)
                if lost is None:
                    continue
                pooled.setdefault(m, {})[str(rate)] = {
                    "accuracy_lost": lost, "n": lost["n"],
                    "vs_reference": None if m == reference else _paired(rows, m, reference, rate, seed, lost=False)}
    return {"format": "rlpc-reader-summary/1", "reference": reference, "methods": methods, "rates": rates,
            "datasets": per_dataset, "pooled_qa": {"datasets": [r["name"] for r in qa_runs], "methods": pooled}}


def _cell(stat: Optional[dict[str, Any]]) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    lo, hi = stat["ci"]
    return f"{100 * stat['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def markdown(summary: dict[str, Any], root: Path) -> str:
    ds = summary["datasets"]
    names = list(ds)
    pooled = summary["pooled_qa"]
    lines = ["<!-- generated by `python -m benchmarks.reader_summary`; edit the benchmark, not this text -->", "",
             "**Accuracy lost against the uncompressed prompt** (points; per row, original minus compressed, mean "
             "[95% bootstrap CI]; lower is better, negative = the compressed prompt did better), reader "
             f"`{next(iter(ds.values()))['reader'] if ds else '?'}`, held-out rows. Reader accuracy on the uncompressed "
             "prompt: " + ", ".join(f"{n} {100 * _orig(ds[n]):.1f}% ({ds[n]['rows']} rows)" for n in names) + ".", ""]
    for rate in summary["rates"]:
        head = ["method"] + [f"{n}" for n in names] + (["QA pooled"] if pooled["methods"] else [])
        lines += [f"Target rate {rate_label(rate)} (the achieved ratio in brackets):", "",
                  "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for m in summary["methods"]:
            cells = [f"`{m}`"]
            for n in names:
                got = ds[n]["methods"].get(m, {}).get(str(rate))
                cells.append("n/a" if got is None else f"{_cell(got['accuracy_lost'])} ({got['ratio']:.2f})")
            if pooled["methods"]:
                p = pooled["methods"].get(m, {}).get(str(rate))
                cells.append("—" if p is None else _cell(p["accuracy_lost"]))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    ref = summary["reference"]
    if pooled["methods"]:
        lines += [f"Against `{ref}` on the same rows, QA pooled ({', '.join(pooled['datasets'])}): accuracy "
                  "difference, points (positive = better than the reference), rows better / worse:", "",
                  "| method | " + " | ".join(f"rate {rate_label(r)}" for r in summary["rates"]) + " |",
                  "|---|" + "---:|" * len(summary["rates"])]
        for m in summary["methods"]:
            if m == ref:
                continue
            cells = []
            for rate in summary["rates"]:
                v = (pooled["methods"].get(m, {}).get(str(rate)) or {}).get("vs_reference")
                cells.append("—" if not v else f"{_cell(v)}; {v['better']} / {v['worse']}")
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        lines.append("")
    scorers = {got.get("scorer") for e in ds.values() for by_rate in e["methods"].values() for got in by_rate.values()}
    scorers.discard(None)
    if scorers:
        lines.append(f"LLMLingua peers' scorer: {', '.join(sorted(scorers))}. n/a: the method does not apply to the "
                     "setting (no separate question to rank by). Per-dataset reports with EM/F1, end-to-end seconds "
                     f"and tokens billed: `{root}/<dataset>/report.md`.")
    return "\n".join(lines) + "\n"


def _orig(entry: dict[str, Any]) -> float:
    for by_rate in entry["methods"].values():
        for got in by_rate.values():
            return got["accuracy_original"]
    return float("nan")


def plot(summary: dict[str, Any], out: Path) -> Optional[str]:
    ds = summary["datasets"]
    if not ds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = summary["rates"]
    fig, axes = plt.subplots(1, len(rates), figsize=(6.5 * len(rates), 4.6), squeeze=False, sharey=True)
    names = list(ds)
    methods = summary["methods"]
    width = 0.8 / max(1, len(methods))
    for ax, rate in zip(axes[0], rates):
        for j, m in enumerate(methods):
            xs, ys, err = [], [], [[], []]
            for i, n in enumerate(names):
                got = ds[n]["methods"].get(m, {}).get(str(rate))
                if got is None:
                    continue
                lost = got["accuracy_lost"]
                xs.append(i + (j - (len(methods) - 1) / 2) * width)
                ys.append(100 * lost["mean"])
                err[0].append(100 * (lost["mean"] - lost["ci"][0]))
                err[1].append(100 * (lost["ci"][1] - lost["mean"]))
            ax.bar(xs, ys, width, yerr=err, capsize=2, label=m)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=15)
        ax.set_title(f"target rate {rate_label(rate)}")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy lost vs uncompressed (points)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("What a capable reader loses on compressed prompts (lower is better)")
    fig.tight_layout()
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)
    return "summary.png"


def replace_block(text: str, block: str, name: str) -> str:
    if START not in text or END not in text:
        raise ValueError(f"{name} has no {START} ... {END} block; add those two lines where the table belongs")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + START + "\n" + block + END + tail


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reader_summary", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="folder holding one python -m training.evaluate --reader run per dataset")
    p.add_argument("--reference", default="graph", help="method every other is compared with (default graph)")
    p.add_argument("--readme", type=Path, default=None, help="rewrite this file's reader block")
    p.add_argument("--before", type=Path, action="append", default=None,
                   help="an earlier folder of runs on the same datasets (repeat it for datasets kept in several "
                        "folders; the first that has a dataset gives its rows)")
    p.add_argument("--before-methods", default="graph,extractive",
                   help="methods of --before shown as METHOD (before) (default graph,extractive)")
    p.add_argument("--out", type=Path, default=None,
                   help="write summary.{json,md,png} here instead of into FOLDER (e.g. a second --reference)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    runs = load_runs(args.folder)
    if not runs:
        p.error(f"no reader runs under {args.folder}: run benchmarks/run_reader.sh (or training.evaluate --reader) first")
    for before in args.before or ():
        add_before(runs, load_runs(before), [m.strip() for m in args.before_methods.split(",") if m.strip()])
    summary = summarize(runs, reference=args.reference, seed=args.seed)
    out = args.out or args.folder
    out.mkdir(parents=True, exist_ok=True)
    summary["plot"] = plot(summary, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    md = markdown(summary, args.folder)
    (out / "summary.md").write_text(md, encoding="utf-8")
    if args.readme is not None:
        args.readme.write_text(replace_block(args.readme.read_text(encoding="utf-8"), md, str(args.readme)),
                               encoding="utf-8")
    print(f"wrote {out / 'summary.json'}, summary.md and summary.png from {len(runs)} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
