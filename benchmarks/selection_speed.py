"""What the meaning-keeping selection costs: each policy with it and with plain word selection, side by side.

    python benchmarks/selection_speed.py --out benchmarks/results/selection_speed

The same QMSum transcript slices (1k ... 64k tokens in the default tokenizer) are compressed at rate 0.5 by
``Compressor(policy=P)`` (structure, meaning units, coarse-to-fine) and ``Compressor(policy=P,
selection={"words_only": True})`` (the word selection before it), alternately, one thread; per length the median of
``--repeats`` timings of each of ``--samples`` slices. The ratio of the two is the selection's cost; the slope of
log time against log length says whether it stays linear. Writes ``OUT/speed.json`` and ``OUT/speed.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def slices(lengths: list[int], samples: int, counter) -> dict[int, list[str]]:
    from rlpc_core.words import split_words
    from training.data import load

    text = "\n".join(dict.fromkeys(e.text for e in load("qmsum", seed=0)))
    words = split_words(text)
    cum = np.concatenate([[0], np.cumsum(counter.word_costs(words))])
    out = {}
    for n in lengths:
        starts = np.linspace(0, cum[-1] - n, num=samples).astype(int)
        texts = []
        for s in starts:
            lo = int(np.searchsorted(cum, s))
            hi = int(np.searchsorted(cum, s + n))
            texts.append(text[words.starts[lo] : words.ends[hi - 1]])
        out[n] = texts
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", default="graph,extractive")
    p.add_argument("--lengths", default="1000,4000,16000,64000")
    p.add_argument("--extractive-lengths", default="1000,4000,16000", help="the extractive policy is slower")
    p.add_argument("--samples", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "selection_speed")
    args = p.parse_args(argv)
    import torch

    from rlpc_core import Compressor

    torch.set_num_threads(1)
    lengths = [int(x) for x in args.lengths.split(",")]
    ext_lengths = [int(x) for x in args.extractive_lengths.split(",")]
    probe = Compressor()
    texts = slices(sorted(set(lengths) | set(ext_lengths)), args.samples, probe.counter)
    rows = []
    for policy in args.policies.split(","):
        new, old = Compressor(policy=policy), Compressor(policy=policy, selection={"words_only": True})
        for c in (new, old):
            c.compress(texts[min(lengths)][0], rate=0.5)  # loads the model and the tokenizer once
        for n in (ext_lengths if policy == "extractive" else lengths):
            t_new, t_old = [], []
            for text in texts[n]:
                a, b = [], []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    new.compress(text, rate=0.5)
                    a.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    old.compress(text, rate=0.5)
                    b.append(time.perf_counter() - t0)
                t_new.append(statistics.median(a))
                t_old.append(statistics.median(b))
            row = {"policy": policy, "tokens": n, "new_ms": 1000 * statistics.median(t_new),
                   "old_ms": 1000 * statistics.median(t_old)}
            row["ratio"] = row["new_ms"] / row["old_ms"]
            row["new_ms_per_1k"] = row["new_ms"] * 1000 / n
            rows.append(row)
            print(json.dumps(row), flush=True)
    slopes = {}
    for policy in {r["policy"] for r in rows}:
        pts = [r for r in rows if r["policy"] == policy]
        if len(pts) >= 2:
            slopes[policy] = float(np.polyfit(np.log([r["tokens"] for r in pts]), np.log([r["new_ms"] for r in pts]), 1)[0])
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"rows": rows, "scaling_exponent": slopes, "threads": 1, "rate": 0.5,
               "command": "python benchmarks/selection_speed.py " + " ".join(argv or sys.argv[1:])}
    (args.out / "speed.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = ["# Cost of the meaning-keeping selection", "",
             "Same QMSum slices, rate 0.5, one thread, alternately; median ms per text. *words only* = the plain word "
             "selection this change replaced. Command: `" + payload["command"] + "`", "",
             "| policy | input tokens | with structure, units, coarse-to-fine (ms) | words only (ms) | ratio | ms per 1k tokens |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['policy']} | {r['tokens']:,} | {r['new_ms']:.1f} | {r['old_ms']:.1f} | {r['ratio']:.2f} | "
                     f"{r['new_ms_per_1k']:.1f} |")
    lines += ["", "Scaling exponent of time against length (1 = linear): "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(slopes.items())), ""]
    (args.out / "speed.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'speed.json'} and speed.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
