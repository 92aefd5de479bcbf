"""A guide: a small local reader that answers the caller's query from the whole text first, so that the sentences
holding its answer rank above those that merely share the question's words.

Lexical relevance finds the sentence that talks about the question; the sentence that answers it often shares few
of its words ("when does the new death of superman come out" -> "... will be released as a two-part film in 2018
and 2019"). A 0.5B reader that has read the whole passage points at it: on 150 held-out NQ rows the 1.5B reader
loses 16.0 points at rate 0.33 with the guide and 31.3 without it (benchmarks/results/reader-guide-heldout). The
guide only adds value (``SelectionConfig.guide_bonus``) to the sentences holding its answer, and where it hesitated
over how to begin (a llama.cpp guide, in process or behind ``rlpc serve-reader``), to those holding its second guess
(``guide_runner_up``); the budget, the structure and every other rank stay, so a wrong guess costs at most one
sentence of budget.

It costs one short generation per call, two when it hesitates (about 1 s for a 150-token passage with the 0.5B GGUF
on 2 cores, the second guess reusing the first's prefill; replies are cached on disk by the reader's identity, so the
same text and query are answered once), and is off unless
``Compressor(guide="llamacpp:qwen2.5-coder-0.5b-instruct")`` (any reader spec) asks for it. Use a reader smaller
and cheaper than the model you pay for: the point is to spend a little locally to send fewer tokens upstream.
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional

import numpy as np

from .graph import STOPWORDS, normalize
from .words import Words

#: The guide the benchmarks measure: Qwen2.5-Coder-0.5B-Instruct under llama.cpp (``rlpc models pull
#: qwen2.5-coder-0.5b-instruct --format gguf``), a third of the 1.5B reader that judges.
DEFAULT_GUIDE = "llamacpp:qwen2.5-coder-0.5b-instruct"

#: Replies longer than this (in words) are explanations, not answers: too vague to point at one sentence.
MAX_ANSWER_WORDS = 12

#: A second guess whose first token had less chance than this is not used: the guide was sure of its beginning.
MIN_RUNNER_UP = 0.05


class Guide:
    """A reader (any spec the evaluator takes) asked the query about the whole text, once per text and query."""

    def __init__(self, spec: str, *, max_new_tokens: int = 24, **options: Any):
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"guide={spec!r} must be a reader spec, e.g. 'llamacpp:qwen2.5-coder-0.5b-instruct'")
        from .evaluator import Evaluator  # the reader stack is imported only by a caller who asks for a guide

        self.spec = spec
        # built now so that a bad spec fails here, with the evaluator's message; the model loads on first use.
        # Replies go to the evaluator's disk cache: the same text and query are answered once.
        self.evaluator = Evaluator(spec, max_new_tokens=max_new_tokens, **options)

    def __repr__(self) -> str:
        return f"Guide({self.spec!r})"

    def answer(self, text: str, query: str) -> str:
        """The guide's short answer to ``query`` from ``text`` (the evaluator's QA prompt and answer extraction)."""
        return str(self.evaluator.answer("qa", [text], [query])[0].answer or "")

    def runner_up(self, text: str, query: str, answer: str) -> Optional[tuple[str, float]]:
        """The guide's second guess after ``answer`` (its own) and how likely its first token was: the answer it would
        have given had it not begun as it did. ``None`` when the reader cannot say, that beginning had less than
        :data:`MIN_RUNNER_UP` of chance, or the second guess is empty or ``answer`` again.

        A 0.5B guide is wrong on about a third of NQ and SQuAD train rows; where it is, its second guess often
        names the right thing from another sentence ("Cristin Milioti" played the mother; "Tracy McConnell" was
        the mother)."""
        from .backends import ReaderCapabilityError
        from .evaluator import build_prompt, get_task

        task = get_task("qa")
        try:
            (text_lp,) = self.evaluator.runner_ups([build_prompt("qa", text, query)], k=1, stop=task.stop)[0]
        except ReaderCapabilityError:
            return None
        second = str(task.extract(text_lp[0]) or "").strip()
        probability = math.exp(text_lp[1])
        if probability < MIN_RUNNER_UP or not second or normalize(second) == normalize(answer):
            return None
        return second, probability


#: Where one written word holds two ("the narrator—Orwell, writing", "1939–1945", "and/or"): an answer may be one
#: of them. Not the hyphen: "Jay-Z" and "pre-1929" are one word.
_JOINED = re.compile(r"[—–/]")
_POSSESSIVE = re.compile(r"['’]s$")


def _pieces(word: str) -> list[str]:
    """The normalised words inside one written word: split at dashes and slashes that join words, a possessive
    "'s" left out ("Shakespeare's play" holds "Shakespeare"), symbols alone ("&") dropped."""
    return [x for x in (_POSSESSIVE.sub("", normalize(p)) for p in _JOINED.split(word)) if x]


def answer_mask(words: Words, answer: str) -> np.ndarray:
    """The words of every place ``answer`` occurs in ``words`` (normalised, word for word; a leading article,
    trailing punctuation, a possessive "'s" and symbols such as "&" do not count, and words joined by a dash or a
    slash count one by one). Empty when the answer is empty, only stopwords, too long to be an answer, or nowhere in
    the text: the guide then changes nothing."""
    n = len(words)
    mask = np.zeros(n, dtype=bool)
    target = [x for w in answer.split() for x in _pieces(w)]
    while target and target[0] in ("a", "an", "the"):
        target = target[1:]
    if not target or len(target) > MAX_ANSWER_WORDS or all(x in STOPWORDS for x in target):
        return mask
    pieces: list[str] = []
    owner: list[int] = []  # the written word each piece is in
    for i, w in enumerate(words.tokens):
        for x in _pieces(w):
            pieces.append(x)
            owner.append(i)
    k = len(target)
    first = target[0]
    for j in range(len(pieces) - k + 1):
        if pieces[j] == first and pieces[j : j + k] == target:
            mask[owner[j] : owner[j + k - 1] + 1] = True
    return mask


__all__ = ["DEFAULT_GUIDE", "Guide", "MAX_ANSWER_WORDS", "MIN_RUNNER_UP", "answer_mask"]
