"""Protected spans: the parts of a prompt that must come out of compression verbatim.

Three sources, merged into one list of character spans over the markup-free text:

* markup in the prompt itself: ``<keep>…</keep>`` around any text (the tags are removed from the output);
* ``protect=``: literal strings (every occurrence) or compiled regular expressions (every match);
* fenced code blocks (```` ``` ```` or ``~~~``), kept whole by default because dropping a token from code
  breaks it.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence, Union

KEEP_OPEN = "<keep>"
KEEP_CLOSE = "</keep>"

ProtectSpec = Union[str, "re.Pattern[str]"]
Span = tuple[int, int]

_MARKUP = re.compile(re.escape(KEEP_OPEN) + "|" + re.escape(KEEP_CLOSE))
# A fence opens at the start of a line with ``` or ~~~ and closes at the next line starting with the same fence;
# an unclosed fence runs to the end of the text (losing code is worse than over-protecting it).
_FENCE = re.compile(r"^(?P<fence>```|~~~)[^\n]*\n.*?(?:^(?P=fence)[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)


def strip_markup(text: str) -> tuple[str, list[Span]]:
    """Remove ``<keep>``/``</keep>`` tags and return the clean text with the spans they enclosed."""
    if KEEP_OPEN not in text and KEEP_CLOSE not in text:
        return text, []
    out: list[str] = []
    spans: list[Span] = []
    pos = 0  # position in the original text
    clean_len = 0
    open_at: int | None = None  # clean-text offset of the pending <keep>, and its original offset
    open_orig = 0
    for m in _MARKUP.finditer(text):
        out.append(text[pos : m.start()])
        clean_len += m.start() - pos
        pos = m.end()
        if m.group() == KEEP_OPEN:
            if open_at is not None:
                raise ValueError(
                    f"nested {KEEP_OPEN} at character {m.start()} (the previous one opened at {open_orig}): "
                    f"{KEEP_OPEN}…{KEEP_CLOSE} spans cannot nest; close the first span before opening another"
                )
            open_at, open_orig = clean_len, m.start()
        else:
            if open_at is None:
                raise ValueError(
                    f"{KEEP_CLOSE} at character {m.start()} has no matching {KEEP_OPEN}: every protected span "
                    f"must be written {KEEP_OPEN}text{KEEP_CLOSE}; add the opening tag or remove this one"
                )
            spans.append((open_at, clean_len))
            open_at = None
    if open_at is not None:
        raise ValueError(
            f"{KEEP_OPEN} at character {open_orig} is never closed: every protected span must be written "
            f"{KEEP_OPEN}text{KEEP_CLOSE}; add {KEEP_CLOSE} where the span ends"
        )
    out.append(text[pos:])
    return "".join(out), spans


def check_protect(protect: ProtectSpec | Iterable[ProtectSpec] | None) -> tuple[ProtectSpec, ...]:
    """Validate ``protect=`` once, up front, so a bad value fails before any model is loaded."""
    if protect is None:
        return ()
    items = (protect,) if isinstance(protect, (str, re.Pattern)) else tuple(protect)
    for item in items:
        if isinstance(item, re.Pattern):
            continue
        if not isinstance(item, str):
            raise TypeError(
                f"protect= got {type(item).__name__} {item!r}: each item must be a str (matched literally) or a "
                f"compiled re.Pattern; wrap regular expressions in re.compile(...)"
            )
        if not item:
            raise ValueError("protect= got an empty string: it would match everywhere; remove it")
    return items


def find_protected(text: str, protect: Sequence[ProtectSpec] = (), *, keep_code: bool = True) -> list[Span]:
    """Character spans of ``text`` matched by ``protect`` items, plus fenced code blocks when ``keep_code``."""
    spans: list[Span] = []
    for item in protect:
        pattern = item if isinstance(item, re.Pattern) else re.compile(re.escape(item))
        spans.extend((m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start())
    if keep_code and ("```" in text or "~~~" in text):
        spans.extend((m.start(), m.end()) for m in _FENCE.finditer(text))
    return merge_spans(spans)


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sort spans and merge the ones that overlap or touch."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def spans_survive(spans: Sequence[Span], source: str, compressed: str) -> bool:
    """True when the text of every span appears verbatim, in order, in the compressed text."""
    pos = 0
    for start, end in spans:
        found = compressed.find(source[start:end], pos)
        if found < 0:
            return False
        pos = found + (end - start)
    return True
