"""The harness with the published peers: ``python -m training.evaluate`` plus LLMLingua-1, LongLLMLingua,
Selective-Context and LLMLingua-2's pipeline (:mod:`benchmarks.peers`) as ``--methods`` entries.

    python -m benchmarks.evaluate --dataset squad --split heldout --methods graph,longllmlingua,llmlingua,truncate,none \\
        --rate 0.33,0.5 --limit 150 --reader llamacpp:qwen2.5-coder-1.5b-instruct --out benchmarks/results/squad

Every flag is ``training.evaluate``'s (``--help`` lists them).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from benchmarks import peers
from training import evaluate


def main(argv: Optional[Sequence[str]] = None) -> int:
    peers.register()
    return evaluate.main(argv, prog="python -m benchmarks.evaluate")


if __name__ == "__main__":
    sys.exit(main())
