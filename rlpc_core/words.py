"""Segment a prompt into whitespace-delimited words and put a subset back together.

Words are the unit every extractive policy keeps or drops: a word is a maximal run of non-whitespace
characters, so a compressed prompt is always an order-preserving subsequence of the original's words and
two kept words can never be glued together. Punctuation stays attached to its word ("market." is one word),
which keeps "$80,000" or "150%" whole.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

_WORD = re.compile(r"\S+")
#: A word that may end a sentence: it ends in . ! or ? (then perhaps a closing quote or bracket).
SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")
#: A full stop that ends an abbreviation, not a sentence: an initial ("J. K. Rowling"), letters with dots ("U.S.",
#: "e.g.", "P.T.O."), or a title before a name ("Dr. Mehta", "St. Louis").
_ABBREVIATION = re.compile(r"^\(?(?:[A-Z]|(?:[A-Za-z]\.){1,3}[A-Za-z]|Mr|Mrs|Ms|Dr|Prof|St|Mt|Ft|Gen|Col|Lt|Sgt|Capt|Cpt|"
                           r"Sen|Rep|Gov|Pres|Rev|Hon|Fr|Sr|Jr|No|Nos|Vol|Fig|vs|approx|ca|cf|etc)\.$")


def ends_sentence(word: str, next_word: str) -> bool:
    """Whether a sentence ends between ``word`` and the ``next_word`` on the same line: after . ! or ?, but not
    before a word in lower case (a sentence does not open with one: "at 5 p.m. on Friday") nor after an
    abbreviation ("the U.S. Navy", "J. K. Rowling", "Dr. Mehta", "The P.T.O. decided"). The structure and the
    selection both cut by it, so that the question the structure finds is a sentence the selection keeps (the
    graph's word features only look for :data:`SENTENCE_END`: a looser cut there moves scores, not what is kept)."""
    return bool(SENTENCE_END.search(word)) and not next_word[:1].islower() and not _ABBREVIATION.match(word)


@dataclass(frozen=True)
class Words:
    """A prompt cut into words, with each word's character span so protected spans can be mapped onto it."""

    text: str
    starts: np.ndarray  # int64 character offset of each word's first character
    ends: np.ndarray  # int64 offset one past each word's last character

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> str:
        return self.text[self.starts[i] : self.ends[i]]

    @functools.cached_property
    def tokens(self) -> list[str]:
        # computed once: the policy, the structure, the units and the selection all read the words
        return [self.text[s:e] for s, e in zip(self.starts.tolist(), self.ends.tolist())]

    @functools.cached_property
    def line_breaks(self) -> list[bool]:
        """Whether a line break comes before each word."""
        ends = [0] + self.ends.tolist()[:-1]
        return ["\n" in self.text[e:s] for e, s in zip(ends, self.starts.tolist())]


def split_words(text: str) -> Words:
    """Cut ``text`` into whitespace-delimited words, remembering where each one sits."""
    spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
    if not spans:
        empty = np.zeros(0, dtype=np.int64)
        return Words(text, empty, empty)
    arr = np.asarray(spans, dtype=np.int64)
    return Words(text, arr[:, 0].copy(), arr[:, 1].copy())


def words_in_spans(words: Words, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Boolean mask of the words that overlap any character span (a span cutting a word protects all of it)."""
    mask = np.zeros(len(words), dtype=bool)
    for start, end in spans:
        if end <= start:
            continue
        # words whose end is after the span start and whose start is before the span end overlap it
        lo = int(np.searchsorted(words.ends, start, side="right"))
        hi = int(np.searchsorted(words.starts, end, side="left"))
        mask[lo:hi] = True
    return mask


def join_kept(words: Words, keep: np.ndarray) -> str:
    """Rebuild the text from the kept words.

    Runs of consecutive kept words keep their original whitespace, so a protected span or a code block comes
    out verbatim. Where words were dropped, the gap becomes the whitespace that preceded the next kept word,
    or a newline if the dropped stretch crossed one and that whitespace did not (paragraphs survive).
    """
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return ""
    text, starts, ends = words.text, words.starts, words.ends
    parts = [text[starts[idx[0]] : ends[idx[0]]]]
    prev = int(idx[0])
    for i in idx[1:].tolist():
        gap = text[ends[i - 1] : starts[i]]  # the whitespace right before word i
        if i != prev + 1:
            dropped = text[ends[prev] : starts[i]]
            if "\n" in dropped and "\n" not in gap:
                gap = "\n"
        parts.append(gap)
        parts.append(text[starts[i] : ends[i]])
        prev = i
    return "".join(parts)
