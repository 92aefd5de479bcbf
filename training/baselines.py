"""The two baselines every harness run can put beside a compressor, registered as rlpc policies.

They go through the very same :class:`~rlpc_core.Compressor` machinery as the graph policy (the same tokenizer,
budget and guarantees) but select plain words by score (``words_only = True``): a baseline is its scores alone.

* ``random``: seeded random scores, nothing protected (the floor any method must beat);
* ``truncate``: scores falling with position, nothing protected: keeps the first words that fit.

The published peers (LLMLingua, LongLLMLingua, Selective-Context) live with the benchmarks, outside the library:
``benchmarks/peers.py``.
"""

from __future__ import annotations

import zlib
from typing import Any, Optional, Sequence

import numpy as np

from rlpc_core import register_policy
from rlpc_core.policies import WordScores

BASELINES = ("random", "truncate")


def _text_seed(seed: int, words: Sequence[str]) -> int:
    # The same prompt gets the same scores whatever order rows are processed in.
    return zlib.crc32("\x1f".join(words).encode("utf-8"), seed & 0xFFFFFFFF)


class RandomPolicy:
    """Seeded random word scores; protects nothing."""

    name = "random"
    words_only = True  # a baseline is its scores alone: plain word selection, no structure, units or sentences

    def __init__(self, config: Any = None, *, seed: int = 0, **_: Any) -> None:
        self.seed = int(seed)

    def score(self, words: Sequence[str], *, query: Optional[str] = None) -> WordScores:
        rng = np.random.default_rng(_text_seed(self.seed, words))
        return WordScores(scores=rng.random(len(words)), protected=np.zeros(len(words), dtype=bool))


class TruncatePolicy:
    """Scores that fall with position: the budget keeps the first words. Protects nothing."""

    name = "truncate"
    words_only = True

    def __init__(self, config: Any = None, **_: Any) -> None:
        pass

    def score(self, words: Sequence[str], *, query: Optional[str] = None) -> WordScores:
        n = len(words)
        return WordScores(scores=-np.arange(n, dtype=np.float64), protected=np.zeros(n, dtype=bool))


def register_baselines(*, seed: int = 0) -> list[str]:
    """Register the baselines with rlpc's policy registry; ``Compressor(policy="random")`` then works."""
    register_policy("random", lambda config, **kw: RandomPolicy(config, seed=seed))
    register_policy("truncate", TruncatePolicy)
    return list(BASELINES)


__all__ = ["BASELINES", "RandomPolicy", "TruncatePolicy", "register_baselines"]
