"""The two policy shapes the compressor knows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class WordScores:
    #: Importance of each word; the compressor keeps the highest within the budget. Comparable across a prompt.
    scores: np.ndarray
    #: Words the policy itself insists on keeping (e.g. numbers); merged with the user's protected spans.
    protected: np.ndarray


@runtime_checkable
class ExtractivePolicy(Protocol):
    name: str

    def score(self, words: Sequence[str], *, query: Optional[str] = None) -> WordScores: ...


@runtime_checkable
class RewritingPolicy(Protocol):
    name: str

    def rewrite(self, text: str, *, target_words: int, query: Optional[str] = None) -> str:
        """Rewrite ``text`` in about ``target_words`` whitespace words (the compressor counts the real budget)."""
        ...
