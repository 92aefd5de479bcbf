"""The one inference entry point: ``Compressor.compress(text) -> CompressionResult``.

The compressor owns everything policies should not have to repeat: input checks, protected spans and markup,
token budgets in a named tokenizer, chunk-free selection over any length, and the rule that nothing is ever
lost (a policy that fails, or a rewrite that breaks a rule, yields a safe result that says why).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np

from .config import CompressorConfig, check_budget
from .guide import Guide, answer_mask
from .policies import ExtractivePolicy, check_policy_name, make_policy
from . import rewrite_rules
from .result import CompressionResult
from .selection import filler_mask, fit_exact, percentile_ranks, relevant_excerpt, select
from .spans import VERBATIM_TAGS, ProtectSpec, check_protect, find_protected, merge_spans, spans_survive, strip_tags
from .structure import analyze, task_text
from .tokens import TokenCounter, get_counter
from .units import Units, find_units
from .words import Words, join_kept, split_words, words_in_spans

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "rlpc.json"
CHECKPOINT_FORMAT = "rlpc-compressor/1"


def select_words(scores: np.ndarray, protected: np.ndarray, costs: np.ndarray, budget: int) -> np.ndarray:
    """Keep every protected word, then the highest-scoring others while their token cost fits ``budget``.

    Ties go to the earlier word, so the result is deterministic.
    """
    keep = protected.copy()
    room = budget - int(costs[protected].sum())
    if room <= 0:
        return keep
    free = np.flatnonzero(~protected)
    order = free[np.lexsort((free, -scores[free]))]
    fits = np.cumsum(costs[order]) <= room
    keep[order[fits]] = True
    return keep


class Compressor:
    """Compress prompts with a named policy; ``Compressor()`` is the embedded default.

    >>> c = Compressor(tokenizer="words")
    >>> r = c.compress("Janet has 3 apples and she buys 5 more apples at the big market. How many apples now?", rate=0.6)
    >>> "3" in r.text.split() and "5" in r.text.split(), r.compressed_tokens <= r.target_tokens
    (True, True)
    """

    def __init__(self, config: Optional[CompressorConfig] = None, /, *, checkpoint: Optional[str] = None, **overrides: Any):
        if config is not None and not isinstance(config, CompressorConfig):
            raise TypeError(f"config must be a CompressorConfig, got {type(config).__name__}; "
                            "pass settings as keywords instead, e.g. Compressor(policy='graph')")
        config = config or CompressorConfig()
        self.config = config.replace(**overrides) if overrides else config
        check_policy_name(self.config.policy)  # fail at construction, not at the first call
        self.checkpoint = checkpoint
        self._policy = None
        self._fallback_policy = None
        self._guide = (Guide(self.config.guide, **self.config.guide_options) if self.config.guide is not None
                       else None)
        self._counter: Optional[TokenCounter] = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Pickle the settings only: loaded models and the lock are rebuilt lazily on the other side, so a
        # compressor travels to worker processes (and through frameworks that pickle components) intact.
        return {"config": self.config, "checkpoint": self.checkpoint}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"], checkpoint=state["checkpoint"])

    def __repr__(self) -> str:
        guide = f", guide={self.config.guide!r}" if self.config.guide is not None else ""
        return f"Compressor(policy={self.config.policy!r}, tokenizer={self.config.tokenizer!r}{guide})"

    # -- lazy, thread-safe loading: building a Compressor is free, the first call loads what it needs
    @property
    def policy(self):
        with self._lock:
            if self._policy is None:
                kwargs = {"checkpoint": self.checkpoint} if self.checkpoint else {}
                self._policy = make_policy(self.config.policy, self.config, **kwargs)
            return self._policy

    @property
    def counter(self) -> TokenCounter:
        with self._lock:
            if self._counter is None:
                self._counter = get_counter(self.config.tokenizer)
            return self._counter

    @property
    def guide(self) -> Optional[Guide]:
        """The guide (``config.guide``), or ``None``: a small reader that answers the query before selection."""
        return self._guide

    def _safe_policy(self):
        """The extractive policy a rejected rewrite falls back to (the graph: training-free, cannot invent)."""
        policy = self.policy
        if isinstance(policy, ExtractivePolicy):
            return policy
        return self._graph_policy()

    def _graph_policy(self):
        with self._lock:
            if self._fallback_policy is None:
                self._fallback_policy = make_policy("graph", self.config)
            return self._fallback_policy

    def load(self) -> float:
        """Load the tokenizer and the policy's model now rather than on the first call; returns the seconds it
        took (0.0 when already loaded). A policy that cannot load is not an error here: the call that needs it
        falls back, saying why."""
        start = time.perf_counter()
        try:
            self.counter
            warm = getattr(self.policy, "load", None)
            if callable(warm):
                warm()
        except Exception:
            log.debug("loading policy %s failed; the first call will fall back", self.config.policy, exc_info=True)
        return time.perf_counter() - start

    # -- public API
    def compress(
        self,
        text: str,
        *,
        rate: Optional[float] = None,
        target_tokens: Optional[int] = None,
        query: Optional[str] = None,
        protect: Union[ProtectSpec, Iterable[ProtectSpec], None] = None,
    ) -> CompressionResult:
        """Compress ``text`` to ``rate`` of its tokens (or to ``target_tokens``), keeping protected spans.

        ``rate="auto"`` is the dynamic rate: what is relevant (to the query, or to the prompt's own question) is
        kept, the rest dropped, and ``result.ratio`` says the rate reached. ``query`` makes compression
        question-aware (the query itself is not part of the output). ``protect``
        takes strings (every occurrence is kept) and compiled regular expressions (every match is kept);
        text inside ``<keep>…</keep>`` is kept too, with the tags removed.
        """
        _check_text(text, "text")
        budget_spec = _check_budget(rate, target_tokens, self.config.rate)
        _check_query(query)
        protected = check_protect(protect)
        load = self.load()
        return dataclasses.replace(self._compress_one(text, budget_spec, query, protected), load_seconds=load)

    def compress_batch(
        self,
        texts: Sequence[str],
        *,
        rate: Optional[float] = None,
        target_tokens: Optional[int] = None,
        query: Union[str, Sequence[Optional[str]], None] = None,
        protect: Union[ProtectSpec, Iterable[ProtectSpec], None] = None,
    ) -> list[CompressionResult]:
        """Compress several prompts with the same settings; ``query`` may be one string or one per prompt.

        Every input is checked before any work starts, so a bad item fails the batch at once.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}; "
                            "use compress() for a single prompt")
        for i, t in enumerate(texts):
            _check_text(t, f"texts[{i}]")
        budget_spec = _check_budget(rate, target_tokens, self.config.rate)
        if query is None or isinstance(query, str):
            queries = [query] * len(texts)
        else:
            queries = list(query)
            if len(queries) != len(texts):
                raise ValueError(f"query has {len(queries)} items but texts has {len(texts)}: "
                                 "pass one query per text, or a single string for all")
        for q in queries:
            _check_query(q)
        protected = check_protect(protect)
        load = self.load()
        policy = self.policy
        if isinstance(policy, ExtractivePolicy) and hasattr(policy, "score_batch") and len(texts) > 1:
            results = self._extract_batch(policy, texts, budget_spec, queries, protected)
        else:
            results = [self._compress_one(t, budget_spec, q, protected) for t, q in zip(texts, queries)]
        return [dataclasses.replace(r, load_seconds=load) for r in results]

    def compress_shared(
        self,
        texts: Sequence[str],
        *,
        rate: Union[float, str, None] = None,
        target_tokens: Optional[int] = None,
        query: Optional[str] = None,
        protect: Union[ProtectSpec, Iterable[ProtectSpec], None] = None,
    ) -> list[CompressionResult]:
        """Compress several texts (the documents retrieved for one query) under ONE budget for all of them.

        The texts are ranked against each other: relevant ones keep more, irrelevant ones shrink, possibly to
        nothing (``text == ""``), in the coarse-to-fine selection of one prompt made of all of them, then split
        back. ``rate`` is a share of all their tokens, ``target_tokens`` a budget for all of them. Each result
        describes its own text; ``target_tokens`` is the share of the budget it was given (its compressed tokens)
        and ``budget_met`` says whether the shared budget was met. A rewriting policy has no keep mask to split,
        so it compresses each text on its own, at the same rate.
        """
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
        for i, t in enumerate(texts):
            _check_text(t, f"texts[{i}]")
        _check_query(query)
        budget_spec = _check_budget(rate, target_tokens, self.config.rate)
        protected = check_protect(protect)
        if not texts:
            return []
        load = self.load()
        if not isinstance(self.policy, ExtractivePolicy):
            share = None if budget_spec[0] != "tokens" else budget_spec[1] / max(1, sum(self.counter.count(t) for t in texts))
            spec = budget_spec if share is None else ("rate", min(1.0, max(share, 1e-6)))
            return [dataclasses.replace(self._compress_one(t, spec, query, protected), load_seconds=load) for t in texts]
        start = time.perf_counter()
        # documents joined by blank lines: paragraphs of one prompt, whose words never merge across documents
        joined = "\n\n".join(texts)
        whole = self._compress_one(joined, budget_spec, query, protected)
        counts = [len(split_words(strip_tags(t)[0])) for t in texts]
        kept = whole.kept if whole.kept is not None else tuple([True] * sum(counts))
        counter = self.counter
        out, pos = [], 0
        for t, n_words in zip(texts, counts):
            clean = strip_tags(t)[0]
            words = split_words(clean)
            mask = np.asarray(kept[pos : pos + n_words], dtype=bool)
            pos += n_words
            text = join_kept(words, mask) if n_words else ""
            compressed = counter.count(text) if text else 0
            original = counter.count(clean) if clean.strip() else 0
            out.append(CompressionResult(
                text=text, original_tokens=original, compressed_tokens=compressed, tokenizer=counter.name,
                target_tokens=compressed, kept=tuple(bool(k) for k in mask), protected_ok=whole.protected_ok,
                budget_met=whole.budget_met, method=whole.method, seconds=0.0, fallback=whole.fallback))
        seconds = time.perf_counter() - start
        total = sum(len(t) for t in texts) or 1
        return [dataclasses.replace(r, seconds=seconds * len(t) / total, load_seconds=load) for r, t in zip(out, texts)]

    # -- checkpoints
    def save_pretrained(self, folder: Union[str, os.PathLike]) -> Path:
        """Write the settings (and the policy's weights, if it has any) so ``from_pretrained`` restores them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        policy = self.policy
        if hasattr(policy, "save_pretrained"):
            policy.save_pretrained(folder)
        payload = {"format": CHECKPOINT_FORMAT, "config": self.config.to_dict()}
        tmp = folder / (CHECKPOINT_FILE + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / CHECKPOINT_FILE)  # atomic: a reader never sees half a file
        return folder

    @classmethod
    def from_pretrained(cls, folder_or_id: Union[str, os.PathLike], **overrides: Any) -> "Compressor":
        """Load a compressor saved by :meth:`save_pretrained`, from a local folder or a Hugging Face repo."""
        folder = _checkpoint_folder(folder_or_id)
        config_file = folder / CHECKPOINT_FILE
        if not config_file.is_file():
            raise ValueError(f"{str(folder_or_id)!r} is not an rlpc checkpoint: it has no {CHECKPOINT_FILE}; "
                             "pass a folder written by Compressor.save_pretrained() or by python -m training.grpo")
        payload = json.loads(config_file.read_text(encoding="utf-8"))
        if payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{config_file} has format {payload.get('format')!r}, expected {CHECKPOINT_FORMAT!r}; "
                             "re-save it with this version of rlpc")
        config = CompressorConfig.from_dict(payload["config"])
        return cls(config, checkpoint=str(folder), **overrides)

    # -- the work
    def _prepare(self, text: str, budget_spec: tuple[str, float], query, protect) -> "Union[_Job, CompressionResult]":
        """The job for ``text``, or its final result when there is nothing to compress (empty, within budget)."""
        start = time.perf_counter()
        clean, typed = strip_tags(text)
        markup_spans = [(a, b) for a, b, tag in typed if tag in VERBATIM_TAGS]
        if not clean.strip():
            # nothing to compress: no model is loaded for an empty prompt
            return CompressionResult(
                text="", original_tokens=0, compressed_tokens=0, tokenizer=self.config.tokenizer,
                target_tokens=0, kept=(), protected_ok=True, budget_met=True, method=self.config.policy,
                seconds=time.perf_counter() - start,
            )
        spans = merge_spans(markup_spans + find_protected(clean, protect, keep_code=self.config.keep_code))
        words = split_words(clean)
        counter = self.counter
        costs = counter.word_costs(words)
        original = int(costs.sum())
        kind, value = budget_spec
        if kind == "auto":  # the dynamic rate: no budget, the relevant blocks decide (reported as the rate reached)
            budget = None
        else:
            budget = int(value) if kind == "tokens" else max(1, int(round(value * original)))
        job = _Job(clean, words, costs, original, budget, spans, query, start, typed)
        sel = self.config.selection
        if not sel.words_only:
            job.structure = analyze(words, query=query, typed=typed, verbatim_spans=spans, rules=sel.structure,
                                    json_values=sel.json == "values")
            if query is None:
                # the prompt's own question (else its closing instruction) makes scoring question-aware when the
                # caller gives none
                job.score_query = task_text(words, job.structure) or None
        if budget is not None and budget >= original:
            return job.result(np.ones(len(words), dtype=bool), clean, original, self.config.policy, True, counter)
        job.prep_seconds = time.perf_counter() - start
        return job

    def _extract_batch(self, policy, texts, budget_spec, queries, protect) -> list[CompressionResult]:
        """compress_batch for policies that score several texts in shared forward passes (``score_batch``).

        Each result's ``seconds`` is its own preparation and selection plus its share (by words) of the shared
        scoring time. A failed batch is retried text by text, so one bad text cannot fail the others.
        """
        prepared = [self._prepare(t, budget_spec, q, protect) for t, q in zip(texts, queries)]
        jobs = [j for j in prepared if isinstance(j, _Job)]
        if not jobs:
            return prepared
        counter = self.counter
        t0 = time.perf_counter()
        try:
            scored = policy.score_batch([j.words.tokens for j in jobs], [j.score_query for j in jobs])
        except Exception:
            log.warning("policy %s failed on a batch; compressing its texts one by one", policy.name, exc_info=True)
            return [j if not isinstance(j, _Job) else self._extract(j, policy, counter) for j in prepared]
        shared = time.perf_counter() - t0
        total_words = sum(len(j.words) for j in jobs) or 1
        results = iter(self._select(j, s, policy, counter, shared * len(j.words) / total_words)
                       for j, s in zip(jobs, scored))
        return [next(results) if isinstance(j, _Job) else j for j in prepared]

    def _compress_one(self, text: str, budget_spec: tuple[str, float], query, protect) -> CompressionResult:
        job = self._prepare(text, budget_spec, query, protect)
        if not isinstance(job, _Job):
            return job
        counter = self.counter
        policy = self.policy
        if isinstance(policy, ExtractivePolicy):
            return self._extract(job, policy, counter)
        try:
            # the policy speaks words; the budget's share of tokens maps onto the same share of words
            share = (job.budget if job.budget is not None else self.config.rate * job.original) / job.original
            target_words = max(1, int(round(len(job.words) * share)))
            rewritten = policy.rewrite(job.clean, target_words=target_words, query=job.query)
            reason = _reject_rewrite(job.clean, rewritten, job.spans, counter, job.original)
        except Exception as err:  # a rewriting model can fail in many ways; the prompt must still get through
            log.warning("policy %s failed, falling back to the graph policy", policy.name, exc_info=True)
            reason = f"{policy.name} raised {type(err).__name__}: {err}"
        if reason is None:
            compressed = counter.count(rewritten)
            return job.result(None, rewritten, compressed, policy.name, True, counter)
        return self._extract(job, self._safe_policy(), counter, fallback=reason)

    def _extract(self, job: "_Job", policy, counter: TokenCounter, fallback: Optional[str] = None) -> CompressionResult:
        try:
            scored = policy.score(job.words.tokens, query=job.score_query)
        except Exception as err:
            reason = f"{policy.name} raised {type(err).__name__}: {err}"
            if policy.name != "graph":  # a trained policy that fails: the training-free graph still compresses
                log.warning("policy %s failed, falling back to the graph policy", policy.name, exc_info=True)
                return self._extract(job, self._graph_policy(), counter, fallback=reason)
            log.warning("policy %s failed; returning the prompt uncompressed", policy.name, exc_info=True)
            keep = np.ones(len(job.words), dtype=bool)
            reason = f"{fallback}; then {reason}" if fallback else reason
            return job.result(keep, job.clean, job.original, "none", True, counter,
                              fallback=f"{reason}; prompt left uncompressed")
        return self._select(job, scored, policy, counter, fallback=fallback)

    def _select(self, job: "_Job", scored, policy, counter: TokenCounter, shared_seconds: Optional[float] = None,
                fallback: Optional[str] = None) -> CompressionResult:
        """Choose the kept words within the budget (:mod:`rlpc_core.selection`), then fit the exact token count.

        ``shared_seconds``: this job's share of a batch's scoring time; its ``seconds`` then count its own
        preparation, that share and its selection, not the time other texts of the batch took.
        """
        if shared_seconds is not None:
            job.start = time.perf_counter() - job.prep_seconds - shared_seconds
        sel = self.config.selection
        scores = np.asarray(scored.scores, dtype=np.float64)
        user = words_in_spans(job.words, job.spans)
        if sel.words_only or getattr(policy, "words_only", False) or job.structure is None:
            protected = scored.protected | user
            budget = job.budget if job.budget is not None else max(1, int(round(self.config.rate * job.original)))
            keep = select_words(scores, protected, job.costs, budget)
            units, droppable, filler = Units((), ()), ~protected, None
        else:
            structure = job.structure
            units = find_units(job.words.tokens, job.words.line_breaks) if sel.units else Units((), ())
            protected = structure.verbatim | user
            guided, unguided = self._guided(job, units)
            fallback = "; ".join(x for x in (fallback, unguided) if x) or None
            keep, protected = select(job.words, job.costs, scores, scored.protected, protected, structure, units,
                                     job.budget, query=job.query, config=sel, user=user, guided=guided,
                                     count=lambda mask: counter.count(join_kept(job.words, mask)))
            droppable = ~protected & ~units.mask(len(job.words)) & ~scored.protected
            filler = filler_mask(job.words)
            budget = job.budget
        text = join_kept(job.words, keep)
        compressed = counter.count(text)
        if budget is not None:
            # Tokens can merge or split across the new word boundaries; trim the weakest droppable words (whole
            # units) until the exact count fits (a few rounds at most, each dropping about the overshoot).
            ranks = percentile_ranks(scores)
            for round_ in range(10):
                over = compressed - budget
                if over <= 0:
                    break
                if not (keep & droppable).any():
                    # only units are left to cut: whole ones go (the budget is met; what is verbatim stays)
                    droppable = ~protected
                    if not (keep & droppable).any():
                        break
                keep = fit_exact(keep, droppable, ranks, units, job.costs, over, filler)
                text = join_kept(job.words, keep)
                compressed = counter.count(text)
        else:
            job.budget = int(compressed)  # the dynamic rate: the rate reached is the budget met
        protected_ok = bool(keep[protected].all())
        return job.result(keep, text, compressed, policy.name, protected_ok, counter, fallback=fallback)

    def _guided(self, job: "_Job", units: Units) -> tuple[Optional[np.ndarray], Optional[str]]:
        """Where the guide's answer to the call's query occurs (weight 1) and its second guess (``guide_runner_up``),
        and why there is none if the guide failed. Only with a query: a prompt's own question may be a task (a word
        problem) whose answer is not in the text. Of a long text the guide reads the most relevant part
        (``guide_reads``); its answer is then looked for in the whole text."""
        if self._guide is None or not job.query:
            return None, None
        try:
            sel = self.config.selection
            text = job.clean
            if sel.guide_reads:
                read = relevant_excerpt(job.words, job.costs, job.structure, units, job.query, sel.guide_reads)
                if not read.all():
                    text = join_kept(job.words, read)
            answer = self._guide.answer(text, job.query)
            weights = answer_mask(job.words, answer).astype(np.float64)
            share = sel.guide_runner_up
            second = self._guide.runner_up(text, job.query, answer) if share else None
            if second is not None:
                weights = np.maximum(weights, share * answer_mask(job.words, second[0]))
            return weights, None
        except Exception as err:  # a guide is a help, never a requirement: compress without it and say so
            # the reason travels in result.fallback; the traceback only for those who ask for debug logs
            log.warning("guide %s failed (%s: %s); compressing without it", self._guide.spec, type(err).__name__, err)
            log.debug("guide %s failed", self._guide.spec, exc_info=True)
            return None, f"guide {self._guide.spec!r} raised {type(err).__name__}: {err}; compressed without it"


class _Job:
    """The facts of one call, so result-building is written once."""

    def __init__(self, clean: str, words: Words, costs, original: int, budget: Optional[int], spans, query,
                 start: float, typed=()):
        self.clean, self.words, self.costs, self.original = clean, words, costs, original
        self.budget, self.spans, self.query, self.start = budget, spans, query, start
        self.typed = typed  # the caller's markup: (start, end, tag) over the clean text
        self.structure = None  # rlpc_core.structure.Structure, unless the selection is words only
        self.score_query = query  # what the policy scores against: the query, else the prompt's own question
        self.prep_seconds = 0.0

    def result(self, keep, text, compressed, method, protected_ok, counter, fallback=None) -> CompressionResult:
        return CompressionResult(
            text=text,
            original_tokens=self.original,
            compressed_tokens=int(compressed),
            tokenizer=counter.name,
            target_tokens=self.budget,
            kept=None if keep is None else tuple(bool(k) for k in keep),
            protected_ok=protected_ok and spans_survive(self.spans, self.clean, text),
            budget_met=int(compressed) <= self.budget,
            method=method,
            seconds=time.perf_counter() - self.start,
            fallback=fallback,
        )


def _reject_rewrite(original: str, rewritten: Any, spans, counter: TokenCounter, original_tokens: int) -> Optional[str]:
    """Why a rewrite cannot be used, or ``None``: rewriting can drop or invent facts, or not compress at all.
    The rules are :mod:`rlpc_core.rewrite_rules`, the ones the format reward trains a policy on."""
    if not isinstance(rewritten, str) or not rewritten.strip():
        return "the rewrite was empty"
    broken = rewrite_rules.violations(original, rewritten, count=counter.count)
    if "not_shorter" in broken:
        return "the rewrite was not shorter than the original"
    if not spans_survive(spans, original, rewritten):
        return "the rewrite lost a protected span"
    given, written = rewrite_rules.numbers(original), rewrite_rules.numbers(rewritten)
    if "invented_numbers" in broken:
        return f"the rewrite contains numbers not in the original: {sorted(written - given)}"
    if "dropped_numbers" in broken:
        return f"the rewrite dropped numbers: {sorted(given - written)}"
    if "chatter" in broken:
        return "the rewrite has chatter around it (a preamble such as 'Sure!' or a comment to the reader)"
    return None


def _check_text(text: Any, name: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__} ({_preview(text)}); "
                        "pass the prompt as text (decode bytes first, join lists of messages yourself)")


def _check_query(query: Any) -> None:
    if query is not None and not isinstance(query, str):
        raise TypeError(f"query must be a str or None, got {type(query).__name__} ({_preview(query)})")


def _check_budget(rate: Any, target_tokens: Any, default_rate: float) -> tuple[str, float]:
    check_budget(rate, target_tokens)
    if target_tokens is not None:
        return ("tokens", int(target_tokens))
    if rate == "auto":
        return ("auto", 0.0)
    return ("rate", float(default_rate if rate is None else rate))


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _checkpoint_folder(folder_or_id: Union[str, os.PathLike]) -> Path:
    path = Path(os.fspath(folder_or_id)).expanduser()
    if path.is_dir():
        return path
    from .models import resolve

    resolved = resolve(os.fspath(folder_or_id))  # raises a clear error for bad local paths
    if Path(resolved).is_dir():
        return Path(resolved)
    from huggingface_hub import snapshot_download  # a hub id: fetch the checkpoint once (users with the hub)

    return Path(snapshot_download(resolved, allow_patterns=["*.json", "*.safetensors", "*.md", "*.txt", "*.model"]))
