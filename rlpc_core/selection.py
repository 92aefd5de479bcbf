"""Coarse-to-fine selection under a token budget, shared by every extractive policy.

A policy scores words; this decides which to keep, so that a compressed prompt reads as whole, relevant
sentences rather than a scatter of strong words:

1. **verbatim first**: instructions, the question and its options, roles, headings, code, JSON and everything the
   caller protected are kept whatever the budget (when they alone exceed it, they are kept and the budget is
   reported as missed: meaning before budget);
2. **coarse**: the rest is cut into blocks, one per sentence and one per few-shot demonstration. Each block gets a
   value: how highly the policy ranks its words, plus how much of the question it covers (and its paragraph
   covers), plus whether it holds the kind of answer the question asks for (a name for "who", a date for
   "when"). Blocks are kept in order of value, each in its *short form*, while the budget allows; a
   demonstration only whole, so examples are dropped whole before any word inside one is cut;
3. **fine**: the budget left is spent putting back the best words the short forms cut.

A block's short form keeps its meaning units whole (negations with their scope, bounds, quantities, names,
dates: :mod:`rlpc_core.units`), its numbers and its content words, and cuts at most ``max_word_drop`` of its
tokens of filler (stopwords), weakest first. In a dense prompt (a math problem: most sentences carry a number the
answer needs) a number-bearing sentence's short form may also cut its weakest content words, down to
``dense_word_drop``. Numbers are therefore protected only together with the
sentence that gives them meaning, and only within what the budget keeps: the budget is met.

With ``budget=None`` (``rate="auto"``) the rate is dynamic: every block whose value reaches ``auto_threshold`` of
the best block's is kept whole, the others dropped, and the rate reached is whatever that leaves; a word problem is
kept whole (every sentence is a fact its answer needs).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .config import SelectionConfig
from .graph import lemmatize, normalize, query_lemmas
from .structure import CODE, DEMO, HEADING, INSTRUCTION, JSON_, MARKER, OPTION, QUESTION, ROLE, Structure, task_text
from .units import MONTHS, Units
from .words import Words, ends_sentence

#: Words a reader can do without inside a kept sentence: articles, forms of "be" and "have", pronouns, the commonest
#: prepositions and "and". Not filler, though stopwords: negations, modals (must, may, should), relations in time,
#: space and quantity (before, after, until, without, except, unless, only, under, over, than, per, or).
FILLER = frozenset("""a an the is are was were be been being am it its this that these those there here of to in on
    at by for with from as into onto upon about and so such very just also then which who whom whose what do does
    did doing has have had having i me my we our us you your yours he him his she her hers they them their theirs
    itself himself herself themselves ourselves myself yourself yourselves""".split())


#: The filler that binds words into a relation ("rate of 20% from April 2015", "Doug and Julie"): cut only after the
#: rest of a sentence's filler (articles, forms of "be" and "have", pronouns), which a reader restores on its own.
BINDING = frozenset("of to in on at by for with from as into onto upon about and".split())


#: A word written in capitals is an acronym ("the US economy", "IT support", "the WHO"), not the filler it spells.
_ACRONYM = re.compile(r"^\W*[A-Z]{2,}\W*$")


def _is_filler(word: str, norm: str) -> bool:
    return not norm or (norm in FILLER and not _ACRONYM.match(word))


def filler_mask(words: Words) -> np.ndarray:
    """Words in :data:`FILLER` (or punctuation alone); an acronym in capitals is never filler."""
    return np.fromiter((_is_filler(w, normalize(w)) for w in words.tokens), dtype=bool, count=len(words))


def table_keys(words: Words) -> np.ndarray:
    """The words of each table row's first cell ("| NimbusHost | 8 | 32 GB |", "Orbita | 16 GB | ..."): a row kept
    without its key ("8 32 GB 1 TB SSD €214") no longer says what it is about."""
    keys = np.zeros(len(words), dtype=bool)
    text = words.text
    pos = 0
    for line in text.split("\n"):
        body = line.strip()
        if body.count("|") >= 2 and not set(body) <= set("|-: "):
            lead = len(line) - len(line.lstrip())
            start = pos + lead + (1 if body.startswith("|") else 0)
            end = text.find("|", start)
            if end > start:
                keys |= (words.starts >= start) & (words.ends <= end)
        pos += len(line) + 1
    return keys


def sentence_ids(words: Words, units: Optional[Units] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(sentence, paragraph)`` index of every word: a sentence ends at . ! ? ; or a line break, a paragraph at a
    blank line; never inside a meaning unit ("bis zum 30. April" is one), before a word in lower case (a sentence
    does not open with one: "at 5 p.m. on Friday"), nor after an abbreviation followed by a capital ("the U.S.
    Navy", "J. K. Rowling", "Dr. Mehta")."""
    n = len(words)
    sent = np.zeros(n, dtype=np.int64)
    para = np.zeros(n, dtype=np.int64)
    inside = np.zeros(n, dtype=bool)  # word i continues the unit of word i - 1
    if units is not None:
        for lo, hi in units.spans:
            inside[lo + 1 : hi] = True
    s = p = 0
    text, starts, ends = words.text, words.starts, words.ends
    for i in range(1, n):
        gap = text[ends[i - 1] : starts[i]]
        prev = text[starts[i - 1] : ends[i - 1]]
        if not inside[i]:
            if "\n" in gap:
                s += 1
            elif ends_sentence(prev, text[starts[i] : ends[i]]) or prev.endswith(";"):
                s += 1  # a clause after a semicolon is a block of its own: a rule in a list of rules can be kept
        if gap.count("\n") >= 2:
            p += 1
        sent[i], para[i] = s, p
    if units is not None:
        # a sentence that is one meaning unit and nothing else, on the line of the sentence before it, completes
        # that sentence ("Comfort trim: 77 kWh battery, heated seats. €38,500."): alone, a price names no item
        merged = False
        for lo, hi in units.spans:
            if 0 < lo and sent[lo] != sent[lo - 1] and (hi == n or sent[hi] != sent[hi - 1]) \
                    and "\n" not in text[ends[lo - 1] : starts[lo]]:
                sent[lo:hi] = sent[lo - 1]
                merged = True
        if merged:
            sent = np.unique(sent, return_inverse=True)[1].astype(np.int64)
    return sent, para


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
    """Scores as ranks in [0, 1] (ties share a rank): comparable across policies whatever their scale."""
    n = len(scores)
    if n <= 1:
        return np.ones(n)
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.arange(n, dtype=np.float64)
    # ties: the mean rank of their group
    uniq, inv = np.unique(scores, return_inverse=True)
    if len(uniq) < n:
        ranks = (np.bincount(inv, weights=ranks) / np.bincount(inv))[inv]
    return ranks / (n - 1)


def _lemmas(words: Words) -> list[str]:
    return [lemmatize(normalize(w)) for w in words.tokens]


def _coverage(group: np.ndarray, lemmas: list[str], q: dict[str, float], n_groups: int) -> np.ndarray:
    """Share of the question's IDF weight each group (sentence or paragraph) covers, in [0, 1]."""
    total = sum(q.values()) or 1.0
    seen: list[set] = [set() for _ in range(n_groups)]
    for i, lem in enumerate(lemmas):
        if lem in q:
            seen[group[i]].add(lem)
    return np.asarray([sum(q[l] for l in s) / total for s in seen], dtype=np.float64)


def question_weights(query: Optional[str], words: Words, structure: Structure, lemmas: list[str],
                     sent: np.ndarray) -> dict[str, float]:
    """IDF weight (over the prompt's sentences) of each content lemma of the question: the caller's ``query``, or
    the question the prompt itself asks. Rare words the question shares with a sentence say most about it."""
    q_lemmas = query_lemmas(query or task_text(words, structure))
    if not q_lemmas:
        return {}
    # document frequency over the sentences that could answer (the question's own words are not evidence)
    asked = (structure.kind == QUESTION) | (structure.kind == INSTRUCTION)
    n_sent = int(sent.max()) + 1 if len(sent) else 1
    df: Counter = Counter()
    for s_lemmas in _group_sets([l if not a else "" for l, a in zip(lemmas, asked)], sent, n_sent):
        df.update(s_lemmas)
    # a question word no sentence has cannot tell sentences apart: left out of the weights (and the total)
    return {l: math.log(1.0 + n_sent / df[l]) for l in q_lemmas if df[l] > 0}


def relevant_excerpt(words: Words, costs: np.ndarray, structure: Structure, units: Units, query: str,
                     max_tokens: int) -> np.ndarray:
    """The words of the paragraphs that cover the query best, up to ``max_tokens``, in reading order: what a guide
    reads of a long text (``SelectionConfig.guide_reads``). Paragraphs go by their question coverage, their
    sentences by theirs, so the best paragraph is read whole (its answer sentence may share no word with the
    question) before the next one's best sentences; a sentence that does not fit is passed over for a shorter one."""
    n = len(words)
    costs = np.asarray(costs, dtype=np.int64)
    if int(costs.sum()) <= max_tokens:
        return np.ones(n, dtype=bool)
    sent, para = sentence_ids(words, units)
    lemmas = _lemmas(words)
    q = question_weights(query, words, structure, lemmas, sent)
    n_sent, n_para = int(sent.max()) + 1, int(para.max()) + 1
    sent_cov = _coverage(sent, lemmas, q, n_sent) if q else np.zeros(n_sent)
    para_cov = _coverage(para, lemmas, q, n_para) if q else np.zeros(n_para)
    sent_para = np.zeros(n_sent, dtype=np.int64)
    sent_para[sent] = para
    sent_cost = np.bincount(sent, weights=costs, minlength=n_sent)
    keep_sent = np.zeros(n_sent, dtype=bool)
    room = max_tokens
    for s in np.lexsort((np.arange(n_sent), -sent_cov, -para_cov[sent_para])):
        if sent_cost[s] <= room:
            keep_sent[s] = True
            room -= int(sent_cost[s])
    return keep_sent[sent]


def _leads(block: np.ndarray, free: np.ndarray, sent: np.ndarray, para: np.ndarray, is_demo: np.ndarray,
           n_blocks: int) -> np.ndarray:
    """1 for the block holding a paragraph's first sentence, else 0 (never a demonstration)."""
    lead = np.zeros(n_blocks)
    first_sent = np.full(int(para.max()) + 1 if len(para) else 1, -1, dtype=np.int64)
    for i in np.flatnonzero(free)[::-1]:
        first_sent[para[i]] = sent[i]
    idx = np.flatnonzero(free & (sent == first_sent[para]))
    lead[np.unique(block[idx])] = 1.0
    lead[is_demo] = 0.0
    return lead


#: What a question asks for, by its opening: a person or place (a name), a time (a year, a date, a month) or an
#: amount (a number). Checked in order; the first match wins.
_ASKS = (("amount", re.compile(r"\bhow (?:many|much|long|far|old|big|tall|high|deep|large)\b|\bwhat (?:percentage|"
                               r"proportion|number|amount)\b", re.I)),
         ("time", re.compile(r"^\W*(?:when|what (?:year|date|day|month|century|time)|which (?:year|century))\b|"
                             r"\b(?:in|since) what year\b", re.I)),
         ("name", re.compile(r"^\W*(?:who|whom|whose|where|which (?:person|country|city|team|company|band|state)|"
                             r"what (?:country|city|team|company|band|state|is the name))\b", re.I)))
_YEARISH = re.compile(r"^(?:1[0-9]|20)\d\d(?:s|\b)")


def asked_kind(query: Optional[str]) -> Optional[str]:
    """``"name"``, ``"time"`` or ``"amount"``: what kind of answer the question asks for (``None``: no telling)."""
    if not query:
        return None
    for kind, pattern in _ASKS:
        if pattern.search(query.strip()):
            return kind
    return None


def _typed(kind: str, words: Words, norm: list[str], numbers: np.ndarray, units: Units, sent: np.ndarray,
           query: Optional[str]) -> np.ndarray:
    """Words that could be the answer of ``kind``, the question's own words excluded (its subject is not its answer)."""
    asked = {normalize(w) for w in (query or "").split()}
    n = len(words)
    if kind == "amount":
        hit = numbers.copy()
    elif kind == "time":
        hit = np.fromiter((bool(_YEARISH.match(x)) or x in MONTHS for x in norm), dtype=bool, count=n)
        for (lo, hi), k in zip(units.spans, units.kinds):
            if "date" in k:
                hit[lo:hi] = True
    else:  # a name: a capitalised word inside a sentence (a sentence's first word proves nothing)
        opens = np.r_[True, sent[1:] != sent[:-1]] if n else np.zeros(0, dtype=bool)
        hit = np.fromiter((w[:1].isupper() for w in words.tokens), dtype=bool, count=n) & ~opens
        for (lo, hi), k in zip(units.spans, units.kinds):
            if "name" in k:
                hit[lo:hi] = True
            elif "date" in k:  # a month is capitalised but names no one ("who ..." is not "on December 8, 1991")
                hit[lo:hi] = False
    return hit & np.fromiter((x not in asked for x in norm), dtype=bool, count=n)


def _group_sets(lemmas: list[str], group: np.ndarray, n: int) -> list[set]:
    out: list[set] = [set() for _ in range(n)]
    for i, lem in enumerate(lemmas):
        out[group[i]].add(lem)
    return out


def select(words: Words, costs: np.ndarray, scores: np.ndarray, numbers: np.ndarray, verbatim: np.ndarray,
           structure: Structure, units: Units, budget: Optional[int], *, query: Optional[str],
           config: SelectionConfig, user: Optional[np.ndarray] = None,
           guided: Optional[np.ndarray] = None,
           count: Optional[Callable[[np.ndarray], int]] = None) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, verbatim)``: the keep mask of ``words`` (see the module docstring) and the words it kept whatever
    the budget. ``numbers``: words the policy protects (kept within their kept block); ``verbatim``: words to keep
    whatever the budget, of which ``user`` were protected by the caller (a math problem's question is not kept
    verbatim: its facts need the room); ``guided``: where a guide's answer occurs (bool, or a weight per word: 1
    for its answer, ``guide_runner_up`` for its second guess; :mod:`rlpc_core.guide`);
    ``budget=None``: the dynamic rate; ``count``: the exact token count of a keep mask's text (words' costs need not
    add up to it: tokens merge and split at the new boundaries), so that an overshoot is taken from the least
    valuable kept sentence (:func:`trim_weakest`) rather than from the weakest words wherever they are."""
    n = len(words)
    if n == 0:
        return verbatim.copy(), verbatim
    costs = np.asarray(costs, dtype=np.int64)
    asked = structure.kind == QUESTION
    if _is_math_problem(words, structure, numbers, query):
        if budget is None:
            # the dynamic rate keeps a word problem whole: every sentence states a fact its answer needs, and the
            # sentence that shares the question's words is rarely the one that holds them (on 30 GSM8K *train*
            # problems relevance alone kept 87% of the tokens on average and dropped facts from 11, down to the bare
            # question)
            return np.ones(n, dtype=bool), verbatim
        final = _final_question(words, structure)
        # the question's facts are the problem's facts (a "Question:" label may hold the whole problem): only its
        # final sentence stays verbatim, and only if it leaves the facts most of the room
        hard = (verbatim & ~(asked | final)) | (user if user is not None else False)
        if int(costs[final].sum()) <= config.math_question_share * budget:
            hard = hard | final
        return _select_facts(words, costs, scores, numbers, hard, final, units, budget,
                             config.math_question_share), hard
    plan = plan_blocks(words, costs, scores, numbers, verbatim, structure, units, query=query, config=config,
                       guided=guided, user=user)
    if plan is None:
        return verbatim.copy(), verbatim
    if budget is None:  # the dynamic rate: relevant blocks whole
        chosen = (plan.value >= config.auto_threshold * plan.value.max()) & ~plan.repeats
        keep = plan.verbatim | (plan.free & chosen[np.maximum(plan.block, 0)])
        for sec in np.unique(plan.section[chosen]):
            if sec >= 0:
                keep[plan.section_heads[sec]] = True
    else:
        keep = realize(plan, plan.by_value, budget)
        for _ in range(REFIT_ROUNDS if count is not None else 0):
            over = count(keep) - budget
            if over <= 0:
                break
            keep = trim_weakest(plan, keep, over)
    # a heading that goes with its section is verbatim only where its section kept something
    return keep, plan.verbatim | (verbatim & keep)


#: How many times an overshoot of the text's exact token count is taken from the least valuable kept sentences
#: (the compressor's word-level trim handles what is left).
REFIT_ROUNDS = 2


@dataclass
class Plan:
    """A prompt cut into blocks (sentences, demonstrations) with their values and forms, computed once: the
    selection ranks the blocks by value; a trainer samples which blocks to keep (:func:`realize` does the rest)."""

    costs: np.ndarray
    verbatim: np.ndarray  # words kept whatever the budget
    free: np.ndarray  # the others (each in a block)
    block: np.ndarray  # block of each word (-1: verbatim)
    members_of: list[np.ndarray]  # word indices of each block
    is_demo: np.ndarray
    value: np.ndarray  # per block: ranks of its content words + question coverage + rules - boilerplate
    short: np.ndarray  # words of every block's short form
    short_cost: np.ndarray
    deep: np.ndarray  # words of the deep forms (math-like dense blocks; else the full block)
    deep_cost: np.ndarray
    deep_ok: np.ndarray
    critical: np.ndarray  # words a kept block never loses (units, numbers, list markers)
    crit_cost: np.ndarray
    ranks: np.ndarray  # the policy's word scores as ranks in [0, 1]
    units: Units
    content: np.ndarray  # words that are not filler
    typed: np.ndarray  # words that could be the answer the question asks for (a name for "who", a date for "when")
    near: np.ndarray  # words next to (not among) the question's words in their sentence: where an answer sits
    logit_part: np.ndarray  # per block: policy_logit_weight x its block logit (in value; zeros when the weight is 0)
    logit_weight: float
    repeats: np.ndarray  # per block: it repeats an earlier sentence word for word (ranked last; auto drops it)
    binding: np.ndarray  # filler that binds a relation (BINDING): put back first, cut last of it
    guided: Optional[np.ndarray] = None  # words where a guide's answer occurs (rlpc_core.guide): kept first in a cut
    section: Optional[np.ndarray] = None  # per block: its section under a heading (-1: none)
    section_heads: Optional[list] = None  # per section: its heading words (kept with the section's first kept block)

    @property
    def n_blocks(self) -> int:
        return len(self.members_of)

    @property
    def by_value(self) -> np.ndarray:
        return np.lexsort((np.arange(self.n_blocks), -self.value))


def plan_blocks(words: Words, costs: np.ndarray, scores: np.ndarray, numbers: np.ndarray, verbatim: np.ndarray,
                structure: Structure, units: Units, *, query: Optional[str], config: SelectionConfig,
                guided: Optional[np.ndarray] = None, user: Optional[np.ndarray] = None) -> Optional[Plan]:
    """The blocks of a prompt and what each costs in its forms (``None`` when every word is verbatim). Headings over
    compressible text go with it (:func:`_section_heads`); ``user``: words the caller protected (they stay)."""
    n = len(words)
    costs = np.asarray(costs, dtype=np.int64)
    sent, para = sentence_ids(words, units)
    ranks = percentile_ranks(np.asarray(scores, dtype=np.float64))
    lemmas = _lemmas(words)
    norm = [normalize(w) for w in words.tokens]
    in_unit = units.mask(n)
    unit_of = units.unit_of(n)
    filler = np.fromiter((_is_filler(w, x) for w, x in zip(words.tokens, norm)), dtype=bool, count=n)
    filler &= ~in_unit
    critical = (in_unit | numbers | (structure.kind == MARKER) | table_keys(words)) & ~verbatim

    # blocks: one per demonstration, one per sentence of the rest (never verbatim words)
    block = np.full(n, -1, dtype=np.int64)
    free = ~verbatim
    demo_words = free & (structure.demo >= 0)
    n_demos = int(structure.demo.max()) + 1 if demo_words.any() else 0
    block[demo_words] = structure.demo[demo_words]
    rest = free & ~demo_words
    if rest.any():
        _, sent_block = np.unique(sent[rest], return_inverse=True)
        block[rest] = n_demos + sent_block
    if not (block >= 0).any():
        return None
    # demonstrations numbered by the structure may skip indices (one kept verbatim): renumber densely
    _, block[free] = np.unique(block[free], return_inverse=True)
    n_blocks = int(block.max()) + 1
    is_demo = np.zeros(n_blocks, dtype=bool)
    is_demo[np.unique(block[demo_words])] = True

    # value: the policy's ranking of the block's content words, plus its (and its paragraph's) question coverage
    content = ~filler
    sums = np.bincount(block[free], weights=(ranks * content)[free], minlength=n_blocks)
    counts = np.bincount(block[free], weights=content[free].astype(np.float64), minlength=n_blocks)
    all_sums = np.bincount(block[free], weights=ranks[free], minlength=n_blocks)
    all_counts = np.bincount(block[free], minlength=n_blocks).astype(np.float64)
    value = np.where(counts > 0, sums / np.maximum(counts, 1), all_sums / np.maximum(all_counts, 1))
    q = question_weights(query, words, structure, lemmas, sent)
    if q:
        n_para = int(para.max()) + 1
        sent_cov = _coverage(sent, lemmas, q, int(sent.max()) + 1)
        para_cov = _coverage(para, lemmas, q, n_para)
        first_word = np.full(n_blocks, -1, dtype=np.int64)
        for i in np.flatnonzero(free)[::-1]:
            first_word[block[i]] = i
        # a demonstration's coverage: its best sentence
        best_sent = np.zeros(n_blocks)
        np.maximum.at(best_sent, block[free], sent_cov[sent[free]])
        value = value + config.query_relevance * best_sent + config.paragraph_relevance * para_cov[para[first_word]]

    # rules and constraints (a negation, a modal of obligation) say what may and may not be done: worth more than
    # narrative of the same relevance
    rule = np.zeros(n_blocks, dtype=bool)
    rule_words = free & (np.fromiter((x in _RULE_WORDS for x in norm), dtype=bool, count=n) |
                         np.isin(unit_of, [k for k, kind in enumerate(units.kinds) if "negation" in kind]))
    rule[np.unique(block[rule_words])] = True
    value = value + config.rule_bonus * rule
    if config.lead_bonus:
        value = value + config.lead_bonus * _leads(block, free, sent, para, is_demo, n_blocks)
    kind = asked_kind(query) if config.answer_type_bonus else None
    typed_words = np.zeros(n, dtype=bool)
    if kind is not None:  # a "who" question is answered by a sentence that names someone, a "when" by a date
        typed_words = free & _typed(kind, words, norm, numbers, units, sent, query)
        typed = np.zeros(n_blocks)
        typed[np.unique(block[typed_words])] = 1.0
        typed[is_demo] = 0.0
        if q:  # only a sentence about the question: a name in an unrelated paragraph answers nothing
            typed *= best_sent > 0
        value = value + config.answer_type_bonus * typed
    if not config.guide_bonus:
        guided = None  # a bonus of 0 turns the guide's answer off, in the ranking and in cuts alike
    if guided is not None:
        # a guide that read the text first points at the sentences holding its answer (weight 1) and its second
        # guess (guide_runner_up; rlpc_core.guide); their words also come first when such a sentence must be cut to
        # fit, before words of the kind asked for. Words of weight 1 also keep their room (realize) and go last in a
        # trim (trim_weakest).
        weight = np.where(free, np.asarray(guided, dtype=np.float64), 0.0)
        hint = np.zeros(n_blocks)
        np.maximum.at(hint, block[free], weight[free])
        hint[is_demo] = 0.0
        value = value + config.guide_bonus * hint
        typed_words = typed_words | (weight > 0)
        guided = weight >= 1.0
    if structure.prior is not None:  # boilerplate and quoted history count for less
        prior_sum = np.bincount(block[free], weights=structure.prior[free], minlength=n_blocks)
        value = value + prior_sum / np.maximum(all_counts, 1)

    logit_part = np.zeros(n_blocks)
    if config.policy_logit_weight:
        logit_part = config.policy_logit_weight * block_logits(np.asarray(scores, dtype=np.float64), block, free,
                                                                content, n_blocks)
        value = value + logit_part

    # a sentence that repeats an earlier one word for word (overlapping retrieved chunks, a quoted reply) tells the
    # reader nothing new: it ranks below every other block, so it is kept only where the budget has room for all
    repeats = _repeats(norm, block, free, content, is_demo, n_blocks)
    if repeats.any() and not repeats.all():
        value = np.where(repeats, value[~repeats].min() - 1.0, value)

    full_cost = np.bincount(block[free], weights=costs[free], minlength=n_blocks).astype(np.int64)
    # short forms: cut filler, weakest first, up to max_word_drop of the block's tokens
    binding = np.fromiter((x in BINDING for x in norm), dtype=bool, count=n)
    order = np.lexsort((np.arange(n), ranks, binding, ~filler))  # filler first, binding filler last of it, by rank
    share = np.where(is_demo, 0.0, config.max_word_drop)  # a demonstration is kept whole or not at all
    short, short_cost = _cut(order, block, costs, free & filler & ~critical, full_cost, share, n_blocks)
    # deep forms, for the number-bearing sentences of a dense prompt (most sentences carry a number the question
    # needs): they may also lose their weakest content words, down to dense_word_drop, rather than be dropped;
    # used only for a sentence that does not fit in its short form
    with_number = np.zeros(n_blocks, dtype=bool)
    with_number[np.unique(block[free & numbers])] = True
    deep_ok = np.zeros(n_blocks, dtype=bool)
    if ((~is_demo).any() and with_number[~is_demo].mean() >= 0.6 and _asks_itself(words, structure, query)
            and _asks_quantity(words, structure, query)):
        deep_ok = with_number & ~is_demo
    deep, deep_cost = _cut(order, block, costs, free & ~critical, full_cost,
                           np.where(deep_ok, config.dense_word_drop, 0.0), n_blocks)
    crit_cost = np.bincount(block[free & critical], weights=costs[free & critical], minlength=n_blocks).astype(np.int64)
    near = _near_question(lemmas, q, sent, content, NEAR_WINDOW) & free if q else np.zeros(n, dtype=bool)
    heads, section, section_heads = _section_heads(structure, verbatim, free, block, n_blocks, user)
    return Plan(costs, verbatim & ~heads, free, block, _members(block, n_blocks), is_demo, value, short, short_cost,
                deep, deep_cost, deep_ok, critical, crit_cost, ranks, units, content, typed_words, near, logit_part,
                float(config.policy_logit_weight), repeats, binding & free, guided, section, section_heads)


def _section_heads(structure: Structure, verbatim: np.ndarray, free: np.ndarray, block: np.ndarray, n_blocks: int,
                   user: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray, list]:
    """``(heading words that go with their section, each block's section or -1, each section's heading words)``.

    A heading ("## Refunds", a "Section: Webhooks" label, "Context:") or a chat role's label ("Assistant:") over
    compressible text is kept when something of its section (its turn) is, and dropped with it: a prompt whose
    sections were all cut must not come out as a column of bare headings ("Section:\n\nSection:",
    "User:\nAssistant:"). Headings in a row ("## Pricing" then "### Free") all go with the section that follows. A
    heading over verbatim text (an "Instructions:" label, a question) or that the caller protected stays whatever
    happens.
    """
    n = len(block)
    heading = ((structure.kind == HEADING) | (structure.kind == ROLE)) & verbatim
    if user is not None:
        heading &= ~user
    heads = np.zeros(n, dtype=bool)
    section = np.full(n_blocks, -1, dtype=np.int64)
    section_heads: list[np.ndarray] = []
    pending: list[int] = []  # heading words since the last word of a section
    reading = False  # inside a section's text (a heading after it opens a new section)
    for i in range(n):
        if heading[i]:
            if reading:
                pending, reading = [], False
            pending.append(i)
        elif free[i]:
            if not reading and pending:
                section_heads.append(np.asarray(pending, dtype=np.int64))
                heads[pending] = True
            reading = reading or bool(pending)
            if reading and section[block[i]] < 0:
                section[block[i]] = len(section_heads) - 1
        elif verbatim[i] and pending and not reading:
            pending = []  # headings over verbatim text (instructions, the question) stay verbatim
    return heads, section, section_heads


#: a repeated sentence counts only with at least this many content words ("Yes.", "Thanks!" may recur and matter)
REPEAT_MIN_CONTENT = 4


def _repeats(norm: list[str], block: np.ndarray, free: np.ndarray, content: np.ndarray, is_demo: np.ndarray,
             n_blocks: int) -> np.ndarray:
    """Per block: it repeats an earlier sentence word for word (case and punctuation aside); demonstrations never."""
    words_of: list[list[str]] = [[] for _ in range(n_blocks)]
    n_content = np.bincount(block[free], weights=content[free].astype(np.float64), minlength=n_blocks)
    for i in np.flatnonzero(free):
        if norm[i]:
            words_of[block[i]].append(norm[i])
    out = np.zeros(n_blocks, dtype=bool)
    seen: set[tuple[str, ...]] = set()
    for b in range(n_blocks):  # blocks are numbered in reading order
        if is_demo[b] or n_content[b] < REPEAT_MIN_CONTENT:
            continue
        key = tuple(words_of[b])
        out[b] = key in seen
        seen.add(key)
    return out


def block_segments(block: np.ndarray, free: np.ndarray, content: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """``(word indices, their block)`` over which a block's logit is averaged: its content words (all its words when
    it has none)."""
    idx = np.flatnonzero(free)
    blk = block[idx]
    has_content = np.zeros(n_blocks, dtype=bool)
    has_content[blk[content[idx]]] = True
    use = content[idx] | ~has_content[blk]
    return idx[use], blk[use]


def block_logits(scores: np.ndarray, block: np.ndarray, free: np.ndarray, content: np.ndarray,
                 n_blocks: int) -> np.ndarray:
    """Each block's logit: the mean of the policy's raw scores over :func:`block_segments`."""
    idx, blk = block_segments(block, free, content, n_blocks)
    counts = np.bincount(blk, minlength=n_blocks).astype(np.float64)
    return np.bincount(blk, weights=scores[idx], minlength=n_blocks) / np.maximum(counts, 1)


def realize(plan: Plan, order: np.ndarray, budget: int) -> np.ndarray:
    """The keep mask when the blocks are taken in ``order`` (block indices; blocks not listed are dropped).

    Each block in turn, while the budget allows: its short form, else its deep form, else (the first block, or one
    holding the guide's answer; never a demonstration) the best of its words that fit (:func:`_cut_to_fit`), a block
    without the guide's answer leaving that answer's tokens until a block holding it is kept; then the budget left
    puts back the best words the forms cut, whole units at a time, words of the kind the question asks for first,
    then the words that bind a relation; then listed blocks that did not fit before may fit in what is left.
    """
    costs, block, free = plan.costs, plan.block, plan.free
    keep = plan.verbatim.copy()
    room = budget - int(costs[plan.verbatim].sum())
    chosen = np.zeros(plan.n_blocks, dtype=bool)
    no_heads = np.zeros(0, dtype=np.int64)
    # the guide's answer keeps its room until a sentence holding it is kept: a sentence ranked above it (more of the
    # question's words) would otherwise take all of a tight budget, and "Tim Russert" goes for the dates beside
    # "moderator" ("He took over ... on December 8, 1991")
    reserve = _answer_reserve(plan, order, room)

    def heads(b: int) -> np.ndarray:  # the heading words this block brings in (its section's, if not kept yet)
        if plan.section is None or plan.section[b] < 0:
            return no_heads
        h = plan.section_heads[plan.section[b]]
        return h[~keep[h]]

    for pos, b in enumerate(order):
        in_b = plan.members_of[b]
        h = heads(b)
        h_cost = int(costs[h].sum())
        # the sentence a guide points at, first and whole when it fits: its filler may be part of the answer
        # ("allows us to solve any problem in C"; cut, "solve any problem C" no longer says it)
        guided_b = plan.guided is not None and bool(plan.guided[in_b].any())
        guided_first = pos == 0 and not plan.is_demo[b] and guided_b
        free_room = room if guided_b else room - reserve
        if guided_first and int(costs[in_b].sum()) + h_cost <= room:
            keep[in_b] = True
            room -= int(costs[in_b].sum())
        elif plan.short_cost[b] + h_cost <= free_room:
            keep[in_b] = plan.short[in_b]
            room -= plan.short_cost[b]
        elif plan.deep_ok[b] and plan.deep_cost[b] + h_cost <= free_room:
            keep[in_b] = plan.deep[in_b]
            room -= plan.deep_cost[b]
        elif (pos == 0 or guided_b) and not plan.is_demo[b]:
            # the most relevant sentence (or one holding the guide's answer) does not fit even in its short form: it
            # still gets the room, cut down to what matters most in it, rather than the room going to less relevant
            # sentences that happen to be short
            taken = _cut_to_fit(plan, in_b, free_room - h_cost)
            if not taken.size:
                continue
            keep[taken] = True
            room -= int(costs[taken].sum())
        else:
            continue
        keep[h] = True
        room -= h_cost
        chosen[b] = True
        if guided_b and plan.guided[in_b][keep[in_b]].any():
            reserve = 0

    # fine: put back the best words the forms cut, whole units at a time, the kind of answer asked for first, then
    # the words that bind a relation ("from", "to": a reader restores "the" on its own, not which way a change went)
    unit_of = plan.units.unit_of(len(keep))
    back = np.flatnonzero(free & ~keep & chosen[np.maximum(block, 0)])
    for i in back[np.lexsort((back, -plan.ranks[back], ~plan.binding[back], ~plan.typed[back]))]:
        if keep[i]:
            continue
        group = plan.units.group(i, unit_of)
        c = int(costs[group[~keep[group]]].sum())
        if c <= room:
            keep[group] = True
            room -= c
    # listed blocks that did not fit before may fit in what is left
    for b in order:
        h = heads(b)
        h_cost = int(costs[h].sum())
        if not chosen[b] and plan.short_cost[b] + h_cost <= room:
            chosen[b] = True
            room -= plan.short_cost[b] + h_cost
            keep[plan.members_of[b]] = plan.short[plan.members_of[b]]
            keep[h] = True
    return keep


def _answer_reserve(plan: Plan, order: np.ndarray, room: int) -> int:
    """The tokens of the guide's answer in the first listed sentence holding it (0 without a guide, or when the
    answer alone would not fit)."""
    if plan.guided is None:
        return 0
    for b in order:
        in_b = plan.members_of[b]
        if not plan.is_demo[b] and plan.guided[in_b].any():
            cost = int(plan.costs[in_b[plan.guided[in_b]]].sum())
            return cost if cost <= room else 0
    return 0


def trim_weakest(plan: Plan, keep: np.ndarray, over: int) -> np.ndarray:
    """``keep`` less about ``over`` tokens: filler first, wherever it is (the words that bind a relation last of it);
    then from the least valuable kept block, then the next: the whole block when the cut would take half of what it
    kept (a fragment such as "within 10 seconds." tells a reader nothing), else its weakest words (units whole; the
    guide's answer, words of the kind asked for, units and numbers last). A heading whose section is left empty goes
    too. The sentences that matter most stay as realized."""
    keep = keep.copy()
    unit_of = plan.units.unit_of(len(keep))
    costs = plan.costs
    dropped = 0

    def drop(idx: np.ndarray) -> None:
        nonlocal dropped
        for i in idx:
            if dropped >= over:
                return
            if not keep[i]:
                continue
            group = plan.units.group(i, unit_of)
            group = group[keep[group]]
            keep[group] = False
            dropped += int(costs[group].sum())

    guided = plan.guided if plan.guided is not None else np.zeros(len(keep), dtype=bool)
    cand = np.flatnonzero(keep & plan.free & ~plan.content & ~plan.critical)
    drop(cand[np.lexsort((-cand, plan.ranks[cand], plan.binding[cand]))])
    kept_blocks = np.unique(plan.block[keep & plan.free])
    # a block still holding the guide's answer goes last, whatever its value: realize kept room for that answer
    answers = np.zeros(plan.n_blocks, dtype=bool)
    answers[np.unique(plan.block[keep & plan.free & guided])] = True
    for b in kept_blocks[np.lexsort((-kept_blocks, plan.value[kept_blocks], answers[kept_blocks]))]:
        if dropped >= over:
            break
        members = plan.members_of[b]
        held = members[keep[members]]
        if 2 * (over - dropped) >= int(costs[held].sum()):
            keep[held] = False
            dropped += int(costs[held].sum())
        else:
            # the guide's answer and words of the kind asked for go last, as a cut (:func:`_cut_to_fit`) takes them
            # first ("Tulsa" before "1965" for "where ..."); the cut's "beside the question's terms" is left out here:
            # trimming by it moved 61 of the meaning suite's and train rows' 1188 texts, many for the worse
            drop(held[np.lexsort((-held, plan.ranks[held], plan.critical[held], plan.typed[held],
                                  guided[held]))])
    if plan.section is not None:  # a heading left over an empty section goes with it
        live = set(plan.section[np.unique(plan.block[keep & plan.free])].tolist())
        for sec, h in enumerate(plan.section_heads):
            if sec not in live:
                keep[h] = False
    return keep


def _cut_to_fit(plan: Plan, members: np.ndarray, room: int) -> np.ndarray:
    """The words of one block worth most within ``room`` tokens: meaning units whole and single words, a guide's
    answer first, then the kind of answer the question asks for (a name for "who"), then units and numbers, then
    content words by the policy's rank; filler last. In the block's order."""
    unit_of = plan.units.unit_of(len(plan.costs))
    items: list[np.ndarray] = []
    seen: set[int] = set()
    for i in members:
        u = int(unit_of[i])
        if u < 0:
            items.append(np.asarray([i]))
        elif u not in seen:
            seen.add(u)
            lo, hi = plan.units.spans[u]
            items.append(np.arange(lo, hi))
    guided = plan.guided if plan.guided is not None else np.zeros(len(plan.costs), dtype=bool)
    key = np.asarray([(not guided[it].any(), not plan.typed[it].any(), not plan.near[it].any(),
                       not plan.critical[it].any(), not plan.content[it].any(), not plan.binding[it].any(),
                       -float(plan.ranks[it].max()), int(it[0])) for it in items],
                     dtype=[("g", bool), ("t", bool), ("n", bool), ("c", bool), ("f", bool), ("b", bool), ("r", float),
                            ("p", int)])
    taken: list[np.ndarray] = []
    for k in np.argsort(key, order=("g", "t", "n", "c", "f", "b", "r", "p"), kind="stable"):
        c = int(plan.costs[items[k]].sum())
        if c <= room:
            taken.append(items[k])
            room -= c
    return np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)


#: How far (in words, within a sentence) from a word of the question a content word counts as "next to" it. Chosen
#: on *train* rows only, by answer survival of the graph policy (SQuAD 400 rows, rate 0.33: 75.6% without the rule,
#: 78.0% with 3, 79.0% with 4; NQ and multi-paragraph contexts within a row of unchanged).
NEAR_WINDOW = 4


def _near_question(lemmas: list[str], q: dict, sent: np.ndarray, content: np.ndarray, window: int) -> np.ndarray:
    """Content words within ``window`` words of a question word in their sentence, the question's own words excluded:
    the reader is given the question, so in a sentence cut to fit, the words beside its terms say most (a "what"
    question's answer sits next to the words it asks about)."""
    n = len(lemmas)
    hit = np.fromiter((l in q for l in lemmas), dtype=bool, count=n)
    near = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(hit):
        lo, hi = max(0, i - window), min(n, i + window + 1)
        near[lo:hi] |= sent[lo:hi] == sent[i]
    return near & ~hit & content


def _members(block: np.ndarray, n_blocks: int) -> list[np.ndarray]:
    """The word indices of each block (blocks hold consecutive words but are found by sorting, in linear time)."""
    idx = np.flatnonzero(block >= 0)
    order = idx[np.argsort(block[idx], kind="stable")]
    bounds = np.searchsorted(block[order], np.arange(n_blocks + 1))
    return [order[bounds[b] : bounds[b + 1]] for b in range(n_blocks)]


def _cut(order: np.ndarray, block: np.ndarray, costs: np.ndarray, cuttable: np.ndarray, full_cost: np.ndarray,
         share: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept words, kept cost per block)`` after cutting ``cuttable`` words in ``order`` while each block's cut stays
    within ``share`` of its tokens."""
    kept = block >= 0
    cap = np.floor(full_cost * share).astype(np.int64)
    cut = np.zeros(n_blocks, dtype=np.int64)
    for i in order[cuttable[order]]:
        b = block[i]
        if cut[b] + costs[i] <= cap[b]:
            kept[i] = False
            cut[b] += costs[i]
    return kept, full_cost - cut


_RULE_WORDS = frozenset("""must shall should required requires require mandatory only never always unless except
    prohibited forbidden allowed permitted eligible ineligible void muss müssen darf dürfen doit doivent debe deben""".split())

_QUANTITY_QUESTION = re.compile(
    r"\bhow (?:many|much|long|far|old|often|fast|tall|high|heavy)\b|"
    r"\b(?:what|find|calculate|compute|determine|work out)\b.{0,60}\b(?:total|sum|average|percent(?:age)?|profit|"
    r"cost|price|salary|income|pension|distance|speed|age|area|volume|weights?|depth|height|length|width|amount|"
    r"number|difference|ratio|value|time|score|balance|bill|worth|miles|hours|minutes|days|years|dollars|points|"
    r"pounds|kilograms|kg|liters|litres|gallons|meters|metres|feet|inches)\b",
    re.IGNORECASE)


def _select_facts(words: Words, costs: np.ndarray, scores: np.ndarray, numbers: np.ndarray, verbatim: np.ndarray,
                  asked: np.ndarray, units: Units, budget: int, question_share: float = 0.3) -> np.ndarray:
    """A math problem: every sentence holds a fact the answer needs, so no sentence is dropped whole. Items are
    meaning units and single words; a number is kept only with its unit or object (its quantity unit). What is
    asked comes first, up to ``question_share`` of the budget (without it the facts answer nothing), then the
    quantities (those of sentences sharing the question's words first, each in reading order), then the best-ranked
    other words, while the budget allows."""
    n = len(words)
    ranks = percentile_ranks(np.asarray(scores, dtype=np.float64))
    unit_of = units.unit_of(n)
    items: list[np.ndarray] = [np.arange(lo, hi) for lo, hi in units.spans]
    items += [np.asarray([i]) for i in range(n) if unit_of[i] < 0]
    asked_content = asked & ~filler_mask(words)
    keep = verbatim.copy()
    room = budget - int(costs[keep].sum())

    def take(order: np.ndarray, limit: int) -> int:
        spent = 0
        for k in order:
            it = items[k][~keep[items[k]]]
            c = int(costs[it].sum())
            if it.size and c <= room - spent and spent + c <= limit:
                keep[it] = True
                spent += c
        return spent

    start = np.asarray([it[0] for it in items])
    rank = np.asarray([ranks[it].max() for it in items])
    in_question = np.asarray([bool(asked_content[it].any()) for it in items])
    has_number = np.asarray([bool(numbers[it].any()) for it in items])
    # the quantities of the sentences that name what the question asks about come first ("the bakery", "a Comfort
    # trim"), then the others, each in reading order: a later fact builds on an earlier one ("twice as many cookies
    # as muffins" needs "48 muffins"), so a tight budget keeps the bases rather than the best-scored relations
    lemmas = _lemmas(words)
    sent, _ = sentence_ids(words, units)
    asked_lemmas = {lemmas[i] for i in np.flatnonzero(asked_content)}
    named = {int(sent[i]) for i in range(n) if not asked[i] and lemmas[i] in asked_lemmas}
    about = np.asarray([int(sent[it[0]]) in named for it in items])
    room -= take(np.lexsort((start, -rank, ~in_question))[: int(in_question.sum())],
                 int(question_share * budget))
    room -= take(np.lexsort((start, ~about, ~has_number))[: int(has_number.sum())], room)
    take(np.lexsort((start, -rank)), room)
    return keep


#: A prompt of this many non-empty lines is a list, not a word problem (no GSM8K question has more than one line).
LIST_LINES = 4


def _is_math_problem(words: Words, structure: Structure, numbers: np.ndarray, query: Optional[str]) -> bool:
    """A word problem (GSM8K-style): a short, plain prompt (no roles, headings, options, examples, code) whose
    sentences mostly state quantities and whose own final question (or closing instruction) asks for one.

    A text that asks nothing itself, compressed for a separate ``query``, is a context (a retrieved passage), not a
    word problem, even when the query asks "how many" and most of its sentences hold numbers: most of its sentences
    are beside the point and go whole, rather than every sentence being cut down to its numbers (on 197 NQ *train*
    passages, 9 had been compressed as word problems, into lists of numbers)."""
    if len(words) > 160:  # word problems are short (GSM8K: 46 words on average); a policy or a page is not
        return False
    if sum(1 for line in words.text.splitlines() if line.strip()) >= LIST_LINES:
        return False  # a price list or a schedule, line by line: its lines are items to select, not facts of one story
    plain = ~np.isin(structure.kind, [ROLE, OPTION, DEMO, JSON_, CODE])
    if not plain.all() or int((structure.kind == HEADING).sum()) > 1:
        return False
    if not _asks_itself(words, structure, query):
        return False
    asked = _final_question(words, structure)
    final = query or " ".join(w for w, a in zip(words.tokens, asked) if a) or task_text(words, structure)
    if not _QUANTITY_QUESTION.search(final) or int(numbers.sum()) < 2:
        return False
    # most of its sentences state a quantity
    sent, _ = sentence_ids(words)
    facts = np.unique(sent[~asked])
    if facts.size == 0:
        return True  # one sentence that is both the facts and the question ("If a bag costs $20 ..., how much ...?")
    return float(np.isin(facts, np.unique(sent[numbers & ~asked])).mean()) >= 0.5


def _asks_itself(words: Words, structure: Structure, query: Optional[str]) -> bool:
    """Whether the prompt holds what is asked: no separate ``query``, or a question (or closing instruction) of its
    own. A text compressed for a separate query that asks nothing itself is a context for that query."""
    return not query or bool(_final_question(words, structure).any())


def _final_question(words: Words, structure: Structure) -> np.ndarray:
    """The words of the last sentence asking something within the prompt's question (a "Question: ..." label can
    hold a whole word problem: only its last sentence is what is asked)."""
    asked = structure.kind == QUESTION
    idx = np.flatnonzero(asked)
    if idx.size == 0:
        # no question: what the closing instruction asks ("..., calculate the total number of crabs.")
        task = task_text(words, structure)
        if not task:
            return asked
        instr = np.flatnonzero(structure.kind == INSTRUCTION)
        last_par = words.text.rfind("\n\n", 0, int(words.starts[-1]))
        out = np.zeros(len(words), dtype=bool)
        out[instr[words.starts[instr] > last_par]] = True
        return out
    sent, _ = sentence_ids(words)
    q_sents = [s_ for s_ in np.unique(sent[idx]) if any(words[i].rstrip("\"')]").endswith("?")
                                                       for i in idx[sent[idx] == s_])]
    if not q_sents:
        return asked
    return asked & (sent == q_sents[-1])


def _asks_quantity(words: Words, structure: Structure, query: Optional[str]) -> bool:
    """Whether the question asks for a quantity (a math problem, where every number is a fact the answer needs)."""
    asked = _final_question(words, structure)
    final = query or " ".join(w for w, a in zip(words.tokens, asked) if a) or task_text(words, structure)
    return bool(_QUANTITY_QUESTION.search(final))


def fit_exact(keep: np.ndarray, droppable: np.ndarray, ranks: np.ndarray, units: Units, costs: np.ndarray,
              over: int, filler: Optional[np.ndarray] = None) -> np.ndarray:
    """Drop the weakest droppable kept words (whole units; ``filler`` first) until about ``over`` tokens are gone."""
    keep = keep.copy()
    unit_of = units.unit_of(len(keep))
    cand = np.flatnonzero(keep & droppable)
    not_filler = np.ones(len(keep), dtype=bool) if filler is None else ~filler
    dropped = 0
    for i in cand[np.lexsort((-cand, ranks[cand], not_filler[cand]))]:
        if dropped >= over:
            break
        if not keep[i]:
            continue
        group = units.group(i, unit_of)
        if not droppable[group].all():
            continue
        keep[group] = False
        dropped += int(costs[group].sum())
    return keep


__all__ = ["FILLER", "Plan", "block_logits", "block_segments", "filler_mask", "fit_exact", "percentile_ranks", "plan_blocks", "question_weights", "realize", "table_keys", "trim_weakest",
           "select", "sentence_ids"]
