"""Target rates in reports: fractions of the original tokens, or ``auto`` (the dynamic rate)."""

from __future__ import annotations

from typing import Any

AUTO = "auto"


def rate_key(rate: Any) -> tuple:
    """Sort key: fractions in order, then ``auto``."""
    return (1, 0.0) if rate == AUTO else (0, float(rate))


def rate_label(rate: Any) -> str:
    return AUTO if rate == AUTO else f"{float(rate):g}"


__all__ = ["AUTO", "rate_key", "rate_label"]
