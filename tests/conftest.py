"""Shared fixtures. Tests that read ../shared/data skip with a clear reason where it is absent (a user's clone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_jsonl(relative: str, limit: int | None = None) -> list[dict]:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"{path} not found: the shared evaluation data sits beside the repo only on the project's machines")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def is_subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(any(w == b for b in it) for w in small)


@pytest.fixture(scope="session")
def word_compressor():
    from rlpc_core import Compressor

    return Compressor(tokenizer="words")
