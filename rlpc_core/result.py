"""The one result type every policy returns: numbers, the text and the keep mask, never formatted strings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Optional


@dataclass(frozen=True)
class CompressionResult:
    #: The compressed prompt (markup removed). Equal to the original when compression fell back.
    text: str
    #: Token counts in ``tokenizer``.
    original_tokens: int
    compressed_tokens: int
    #: Name of the tokenizer the counts are in (a model spec, ``tiktoken:…`` or ``words``).
    tokenizer: str
    #: The budget this call aimed at, in tokens of ``tokenizer``.
    target_tokens: int
    #: Per-word keep mask over the original's whitespace words, for extractive policies; ``None`` for a
    #: rewriting policy, whose output is not a subsequence of the input.
    kept: Optional[tuple[bool, ...]]
    #: Every protected span (markup, ``protect=``, code blocks, numbers) appears verbatim in ``text``.
    protected_ok: bool
    #: ``compressed_tokens <= target_tokens``. False only when the protected spans alone exceed the budget:
    #: they are kept anyway, because losing them would damage the prompt.
    budget_met: bool
    #: The policy that produced ``text`` (after any fallback).
    method: str
    #: Wall-clock seconds spent in compression (the work; a model's one-off load is in ``load_seconds``).
    seconds: float
    #: Why something asked for was not used: the policy's output, or the guide's answer (``None`` when all was).
    fallback: Optional[str] = None
    #: Seconds the call spent loading the tokenizer and the policy's model first (0.0 once they are loaded).
    #: One figure per call: every result of a batch repeats it.
    load_seconds: float = 0.0

    @property
    def ratio(self) -> float:
        """compressed / original tokens (1.0 for an empty prompt)."""
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0

    @property
    def saved_tokens(self) -> int:
        return self.original_tokens - self.compressed_tokens

    #: The figures adapters put in metadata and traces: everything but the text and the per-word mask.
    FIGURES: ClassVar[tuple[str, ...]] = ("original_tokens", "compressed_tokens", "saved_tokens", "ratio", "target_tokens", "tokenizer",
               "method", "protected_ok", "budget_met", "fallback", "seconds", "load_seconds")

    def figures(self) -> dict[str, Any]:
        """The numbers of this result, JSON-ready (no text, no keep mask: too large for metadata or a trace)."""
        return {name: getattr(self, name) for name in self.FIGURES}

    def to_dict(self) -> dict[str, Any]:
        """Every field plus the derived figures, JSON-ready (``kept`` becomes a list)."""
        data = dataclasses.asdict(self)
        data["kept"] = None if self.kept is None else list(self.kept)
        data["ratio"] = self.ratio
        data["saved_tokens"] = self.saved_tokens
        return data
