"""Paired differences against a reference method, from a benchmark's per-row records.

    python -m training.paired benchmarks/results/squad --reference graph

Two methods measured on the same rows differ by less noise than their two confidence intervals suggest: this
takes each row's difference (method minus reference) of the reader's accuracy where a reader was run, of the task's
main metric (answer survival for qa, number retention for math) and of the likelihood Δ, and gives its mean with a 95% bootstrap CI, per rate and pooled over
rates, plus how many rows each side wins, and on how many rows the method's compressed text differs from the
reference's at all (a variant that changes few texts can change few answers). Reads ``FOLDER/rows.jsonl`` (written by ``python -m training.evaluate``)
and writes ``FOLDER/paired.json`` and ``FOLDER/paired.md`` (``paired-vs-REFERENCE.*`` for another reference than
the graph, so both can sit side by side).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from training.stats import bootstrap_ci
from training.rates import rate_key

MAIN = {"qa": "answer_survival", "math": "number_retention"}


def paired(rows: Sequence[dict[str, Any]], reference: str, seed: int = 0) -> dict[str, Any]:
    """``{method: {rate or "pooled": {metric: {mean, ci, n, wins, losses}}}}`` against ``reference``, plus
    ``texts_differ: {changed, rows}`` where the rows hold their compressed texts."""
    by = {(r["method"], r["rate"], r["id"]): r for r in rows}
    tasks = {r["task"] for r in rows}
    metrics = [MAIN[t] for t in tasks if t in MAIN] + ["ll_delta"]
    if any(r.get("reader_accuracy") is not None for r in rows):
        metrics.insert(0, "reader_accuracy")  # the headline: a capable reader's accuracy (training.downstream)
    methods = sorted({r["method"] for r in rows} - {reference, "none"})
    rates = sorted({r["rate"] for r in rows}, key=rate_key)
    out: dict[str, Any] = {}
    for m in methods:
        res: dict[str, Any] = {}
        fixed = [r for r in rates if r != "auto"]  # pooled over the fixed rates; auto is its own row
        for label, sel in [(str(rate), [rate]) for rate in rates] + [("pooled", fixed)]:
            entry: dict[str, Any] = {}
            texts = [(r.get("text"), by[(reference, rate, rid)].get("text")) for (method, rate, rid), r in by.items()
                     if method == m and rate in sel and (reference, rate, rid) in by]
            if texts and all(a is not None and b is not None for a, b in texts):
                entry["texts_differ"] = {"changed": int(sum(a != b for a, b in texts)), "rows": len(texts)}
            for metric in metrics:
                diffs = []
                for (method, rate, rid), r in by.items():
                    ref = by.get((reference, rate, rid))
                    if method != m or rate not in sel or ref is None:
                        continue
                    a, b = r.get(metric), ref.get(metric)
                    if a is not None and b is not None:
                        diffs.append(float(a) - float(b))
                ci = bootstrap_ci(diffs, seed)
                if ci is not None:
                    ci.update(wins=int(sum(d > 0 for d in diffs)), losses=int(sum(d < 0 for d in diffs)))
                    entry[metric] = ci
            if any(k != "texts_differ" for k in entry):
                res[label] = entry
        if res:
            out[m] = res
    return out


def markdown(result: dict[str, Any], reference: str, folder: Path) -> str:
    lines = [f"# Paired differences against `{reference}`: {folder.name}", "",
             f"Per row: method minus `{reference}` on the same rows; mean [95% bootstrap CI], rows won / lost. "
             f"Command: `python -m training.paired {folder} --reference {reference}`", "",
             "| method | rate | metric | difference [95% CI] | won / lost |", "|---|---|---|---:|---:|"]
    for m, by_rate in result.items():
        for rate, entry in by_rate.items():
            for metric, ci in entry.items():
                if metric == "texts_differ":
                    lines.append(f"| `{m}` | {rate} | compressed text differs | {ci['changed']} of {ci['rows']} rows | — |")
                    continue
                lines.append(f"| `{m}` | {rate} | {metric} | {ci['mean']:+.3f} [{ci['ci'][0]:+.3f}, {ci['ci'][1]:+.3f}] "
                             f"| {ci['wins']} / {ci['losses']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.paired", description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a python -m training.evaluate --out folder (with rows.jsonl)")
    p.add_argument("--reference", default="graph", help="the method every other is compared with")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = args.folder / "rows.jsonl"
    if not path.is_file():
        p.error(f"{path} does not exist: run python -m training.evaluate --out {args.folder} first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not any(r["method"] == args.reference for r in rows):
        p.error(f"--reference {args.reference!r} is not among the methods of {path}: "
                f"{sorted({r['method'] for r in rows})}")
    result = paired(rows, args.reference, args.seed)
    payload = {"reference": args.reference, "folder": str(args.folder), "paired": result}
    stem = "paired" if args.reference == "graph" else f"paired-vs-{args.reference}"
    (args.folder / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (args.folder / f"{stem}.md").write_text(markdown(result, args.reference, args.folder), encoding="utf-8")
    print(f"wrote {args.folder / stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
