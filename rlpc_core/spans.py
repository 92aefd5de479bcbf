"""Protected spans: the parts of a prompt that must come out of compression verbatim.

Three sources, merged into one list of character spans over the markup-free text:

* markup in the prompt itself: ``<keep>…</keep>`` around any text (the tags are removed from the output), and
  the typed tags :mod:`rlpc_core.structure` reads (``<question>``, ``<instruction>``: verbatim too; ``<demo>``,
  ``<compress>``);
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

#: Markup a caller puts in a prompt: ``keep`` (verbatim), ``question`` and ``instruction`` (verbatim, and what they
#: are), ``demo`` (one few-shot demonstration: kept or dropped whole), ``compress`` (compressible, whatever the
#: structure rules would say). Tags of one kind cannot nest; tags of different kinds can.
TAGS = ("keep", "question", "instruction", "demo", "compress")
VERBATIM_TAGS = frozenset({"keep", "question", "instruction"})
_MARKUP = re.compile(r"</?(?:" + "|".join(TAGS) + r")>")
# A fence opens at the start of a line with ``` or ~~~ and closes at the next line starting with the same fence;
# an unclosed fence runs to the end of the text (losing code is worse than over-protecting it).
_FENCE = re.compile(r"^(?P<fence>```|~~~)[^\n]*\n.*?(?:^(?P=fence)[^\n]*$|\Z)", re.MULTILINE | re.DOTALL)


def strip_tags(text: str) -> tuple[str, list[tuple[int, int, str]]]:
    """Remove the markup tags (:data:`TAGS`) and return the clean text with ``(start, end, tag)`` spans over it."""
    if "<" not in text or not _MARKUP.search(text):
        return text, []
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    pos = 0
    clean_len = 0
    open_at: dict[str, tuple[int, int]] = {}  # tag -> (clean offset, original offset) of its pending opening
    for m in _MARKUP.finditer(text):
        out.append(text[pos : m.start()])
        clean_len += m.start() - pos
        pos = m.end()
        tag = m.group().strip("</>")
        opening, closing = f"<{tag}>", f"</{tag}>"
        if not m.group().startswith("</"):
            if tag in open_at:
                raise ValueError(
                    f"nested {opening} at character {m.start()} (the previous one opened at {open_at[tag][1]}): "
                    f"{opening}…{closing} spans cannot nest; close the first span before opening another"
                )
            open_at[tag] = (clean_len, m.start())
        else:
            if tag not in open_at:
                raise ValueError(
                    f"{closing} at character {m.start()} has no matching {opening}: every such span "
                    f"must be written {opening}text{closing}; add the opening tag or remove this one"
                )
            spans.append((open_at.pop(tag)[0], clean_len, tag))
    if open_at:
        tag, (_, orig) = next(iter(open_at.items()))
        raise ValueError(
            f"<{tag}> at character {orig} is never closed: every such span must be written "
            f"<{tag}>text</{tag}>; add </{tag}> where the span ends"
        )
    out.append(text[pos:])
    return "".join(out), sorted(spans)


def strip_markup(text: str) -> tuple[str, list[Span]]:
    """Remove the markup tags and return the clean text with the spans that must come out verbatim."""
    clean, typed = strip_tags(text)
    return clean, [(a, b) for a, b, tag in typed if tag in VERBATIM_TAGS]


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
