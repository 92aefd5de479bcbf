"""What both LangChain adapters share: the compressor field's settings and the figures they report."""

from __future__ import annotations

from typing import Any, Optional

from rlpc_core import CompressionResult
from rlpc_core.config import check_rate, check_target_tokens

#: Figures copied from a CompressionResult into metadata and callback events (``kept`` is left out: it is a
#: per-word mask, too large for a trace and meaningless without the original text).
FIGURES = ("original_tokens", "compressed_tokens", "saved_tokens", "ratio", "target_tokens", "tokenizer",
           "method", "protected_ok", "budget_met", "fallback", "seconds")


def figures(result: CompressionResult) -> dict[str, Any]:
    data = result.to_dict()
    return {key: data[key] for key in FIGURES}


def check_budget(rate: Optional[float], target_tokens: Optional[int]) -> None:
    """Fail at construction, with the core's messages, rather than at the first call inside a chain."""
    if rate is not None:
        check_rate(rate)
    if target_tokens is not None:
        check_target_tokens(target_tokens)
    if rate is not None and target_tokens is not None:
        raise ValueError(f"got both rate={rate!r} and target_tokens={target_tokens!r}: pass only one of them")
