"""The training-free policy: keep the words the importance graph ranks highest."""

from __future__ import annotations

import threading
from typing import Optional, Sequence

from ..config import CompressorConfig
from ..graph import score_words
from .base import WordScores


class GraphPolicy:
    name = "graph"

    def __init__(self, config: CompressorConfig, *, checkpoint: Optional[str] = None) -> None:
        # checkpoint: a saved graph compressor's folder holds settings only (rlpc.json), no weights
        self.config = config.graph
        self._embed = None
        self._lock = threading.Lock()

    def _embedder(self):
        # MiniLM is loaded only when similarity links are switched on, and once per policy.
        if not self.config.use_embeddings:
            return None
        with self._lock:
            if self._embed is None:
                from ..models import load_sentence_embedder

                model = load_sentence_embedder(self.config.embedder)
                self._embed = lambda texts: model.encode(texts, convert_to_numpy=True, show_progress_bar=False)
        return self._embed

    def load(self) -> None:
        """Load MiniLM now when similarity links are on (``Compressor.load``); nothing to load otherwise."""
        self._embedder()

    def score(self, words: Sequence[str], *, query: Optional[str] = None) -> WordScores:
        scored = score_words(words, self.config, query=query, embed=self._embedder())
        return WordScores(scored.scores, scored.protected)
