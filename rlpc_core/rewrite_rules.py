"""What a rewrite must not do, defined once.

A rewriting policy's output is judged twice: by the format reward while it trains, and by the compressor's guard
before a rewrite reaches the downstream LLM. Both read these rules, so training never pushes a policy toward
output that inference refuses, nor penalises output that inference accepts.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

#: A number as written in prompts: digits with thousands or decimal separators ("2,400", "3.5", "98.7").
NUMBER = re.compile(r"\d+(?:[.,]\d+)*")

# The pieces both preamble patterns share, so that detecting and stripping agree on what an opening is.
_OPENER = r"(?:sure|okay|ok|certainly|of course|absolutely|here(?:'s|’s| is| are)|below is)\b"
_LABEL = r"(?: prompt| text| version)?\s*:"  # after compressed / shortened / ...: "Compressed prompt:"
_LABEL_WORDS = "compressed|shortened|condensed|rewritten"

#: Openings a chat model puts before the rewrite ("Sure!", "Of course.", "Here is the compressed prompt:", a quote).
PREAMBLE = re.compile(
    rf"^\s*(?:{_OPENER}|i(?:'ve| have)\b|the compressed\b|(?:{_LABEL_WORDS}|short){_LABEL}|prompt\s*:|[\"“”‘’'`])",
    re.IGNORECASE)
# One opening with the rest of its clause ("Sure! Here is the compressed prompt:"), for stripping.
_PREAMBLE_CLAUSE = re.compile(rf"^\s*(?:{_OPENER}[^\n:]*?(?::|[.!]\s|\n)\s*|(?:{_LABEL_WORDS}){_LABEL}\s*)",
                              re.IGNORECASE)
#: Chatter anywhere in the rewrite.
CHATTER = re.compile(r"\b(?:let me know|i hope this|as an ai|feel free to|compressed (?:prompt|version|text))\b",
                     re.IGNORECASE)

#: The rules the format reward scores, in the order it reports them; the guard checks these and more.
FORMAT_RULES = ("empty", "chatter", "not_shorter", "invented_numbers")


def numbers(text: str) -> set[str]:
    return set(NUMBER.findall(text))


def has_chatter(original: str, rewrite: str) -> bool:
    """A preamble or chatter the original itself does not have (a prompt may well start with "Sure,")."""
    return bool((PREAMBLE.search(rewrite) and not PREAMBLE.search(original))
                or (CHATTER.search(rewrite) and not CHATTER.search(original)))


def strip_chatter(text: str) -> str:
    """The rewrite without the wrapping a model adds around it (preambles, code fences, quotes)."""
    out = text.strip()
    for _ in range(2):  # "Sure! Here is the compressed prompt:" is two preambles in a row
        out = _PREAMBLE_CLAUSE.sub("", out, count=1).strip()
    if out.startswith("```") and out.endswith("```"):
        out = out.strip("`").strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'“”":
        out = out[1:-1].strip()
    return out


def violations(original: str, rewrite: str, *, count: Optional[Callable[[str], int]] = None) -> list[str]:
    """Every rule ``rewrite`` breaks, as codes: ``empty``, ``chatter``, ``not_shorter`` (in ``count``'s units,
    whitespace words by default), ``invented_numbers`` (a number the original does not contain) and
    ``dropped_numbers`` (a number of the original that is gone).

    >>> violations("Janet's ducks lay 16 eggs per day and she eats 3 of them.", 'Sure! Janet 16 eggs, eats 4')
    ['chatter', 'invented_numbers', 'dropped_numbers']
    """
    if not rewrite.strip():
        return ["empty"]
    count = count or (lambda t: len(t.split()))
    broken = []
    if has_chatter(original, rewrite):
        broken.append("chatter")
    if count(rewrite) >= count(original):
        broken.append("not_shorter")
    if numbers(rewrite) - numbers(original):
        broken.append("invented_numbers")
    if numbers(original) - numbers(rewrite):
        broken.append("dropped_numbers")
    return broken
