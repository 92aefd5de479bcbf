"""How often a QA context holds a sentence that structure detection keeps verbatim (an instruction, a heading ...).

    python benchmarks/structure_counts.py [--split train] [--datasets squad,nq,squad-multi,nq-20docs]

A retrieved passage gives the model no orders: a sentence of one that is read as an instruction is kept whatever
the budget and takes the room of the sentences that answer. This counts, per dataset, the contexts (with their
question as the query) that hold any word of a verbatim kind, and prints a few of those words. Read the train
split when changing the rules; the held-out split is for reporting.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def count(dataset: str, split: str, show: int) -> dict:
    from rlpc_core.structure import KIND_NAMES, VERBATIM, analyze
    from rlpc_core.words import split_words
    from training.data import load

    examples = load(dataset, split=split)
    kinds: Counter = Counter()
    shown: list[str] = []
    for e in examples:
        words = split_words(e.text)
        st = analyze(words, query=e.question)
        for k in sorted(set(st.kind.tolist()) & VERBATIM):
            kinds[KIND_NAMES[k]] += 1
            if len(shown) < show:
                shown.append(" ".join(w for w, x in zip(words.tokens, st.kind) if x == k)[:120])
    return {"dataset": dataset, "split": split, "contexts": len(examples), "with_kind": dict(kinds), "examples": shown}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/structure_counts.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--split", default="train")
    p.add_argument("--datasets", default="squad,nq,squad-multi,nq-20docs")
    p.add_argument("--show", type=int, default=3, help="example words printed per dataset")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    for dataset in (d.strip() for d in args.datasets.split(",") if d.strip()):
        r = count(dataset, args.split, args.show)
        print(f"{dataset} ({args.split}): {r['contexts']} contexts; with a verbatim kind: {r['with_kind'] or 'none'}")
        for line in r["examples"]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
