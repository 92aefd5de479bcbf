"""Reward functions for GRPO, in trl's contract: ``fn(prompts, completions, **kwargs) -> list[float | None]``.

trl's ``GRPOTrainer`` calls every reward function with the batch's ``prompts``, ``completions`` (plain strings
for a standard dataset, ``[{"role": "assistant", "content": ...}]`` for a conversational one) and every other
dataset column as a keyword argument holding one value per completion (rows are repeated for the G
generations of a group), plus its own extras (``completion_ids``, ``trainer_state``, ``log_metric``, ...).
A reward returns one float per completion, or ``None`` where it does not apply (trl then leaves it out of
that row's weighted sum).

The policy's prompt wraps the text to compress in instructions, so no reward parses ``prompts``; the text
itself comes from dataset columns:

* ``original`` (every reward): the uncompressed text that the completion compresses;
* ``question`` (evaluator rewards with task ``qa``): the uncompressed question; the context is what is compressed;
* ``answer`` (needed by ``answer_likelihood``, optional for ``answer_agreement``): the gold answer, GSM8K's full
  solution (``... #### 18``) or, for qa, a string or a list of acceptable strings;
* ``task`` (optional): ``"math"`` or ``"qa"`` per row, overriding the reward's ``task`` setting.

Rewards live in one registry (:data:`REWARDS`). A recipe names them with weights and settings, and
:func:`build_rewards` turns that list into what ``GRPOTrainer`` takes::

    funcs, weights = build_rewards([{"name": "compression", "weight": 1.0, "kwargs": {"target_rate": 0.5}},
                                    {"name": "answer_likelihood", "weight": 2.0, "kwargs": {"task": "math"}}])
    GRPOTrainer(..., reward_funcs=funcs, args=GRPOConfig(..., reward_weights=weights))

Evaluator-backed rewards build their :class:`~rlpc_core.evaluator.Evaluator` or
:class:`~rlpc_core.feedback.FeedbackModel` once, when the reward is built, and rewards that name the same
settings share one instance (and so one model and one cache connection).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import json
import math
import os
import re
import threading
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from .config import check_rate
from .evaluator import (DEFAULT_EVALUATOR, EVALUATOR_SETTINGS, TASKS, TRAINING_READER, Evaluator, ReaderRequest,
                        answers_match, build_prompt, extract_math_answer, get_task, qa_f1, score_answer)
from .feedback import DEFAULT_CROSS_ENCODER, FeedbackModel
from .graph import is_number_word, lemmatize, normalize
from . import rewrite_rules
from .models import cache_dir
from .spans import check_protect, find_protected, merge_spans, strip_markup
from .tokens import get_counter

RewardFunc = Callable[..., list[Optional[float]]]
RewardFactory = Callable[..., RewardFunc]

#: Registered rewards: name -> factory(**settings) -> reward function.
REWARDS: dict[str, RewardFactory] = {}


def register_reward(name: str) -> Callable[[RewardFactory], RewardFactory]:
    """Register a factory ``factory(**settings) -> fn(prompts, completions, **kwargs)`` under ``name``.

    A later registration under the same name replaces the earlier one (as with policies), so a notebook can
    redefine a reward.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"reward name {name!r} must be an identifier (trl logs rewards by name), e.g. 'my_reward'")

    def decorate(factory: RewardFactory) -> RewardFactory:
        REWARDS[name] = factory
        return factory

    return decorate


def reward_names() -> list[str]:
    return sorted(REWARDS)


# ---------------------------------------------------------------- helpers every reward uses

def completion_text(completion: Any) -> str:
    """The text of one completion: a plain string, or the assistant content of a conversational completion.

    >>> completion_text("Janet 16 eggs"), completion_text([{"role": "assistant", "content": "Janet 16 eggs"}])
    ('Janet 16 eggs', 'Janet 16 eggs')
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        return _content(completion.get("content"))
    if isinstance(completion, Sequence):
        return "".join(_content(m.get("content")) for m in completion
                       if isinstance(m, Mapping) and m.get("role", "assistant") == "assistant")
    raise TypeError(f"a completion must be a str or a list of chat messages, got {type(completion).__name__}")


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # multimodal content: a list of blocks, of which the text blocks count
    return "".join(b.get("text", "") for b in content if isinstance(b, Mapping) and b.get("type", "text") == "text")


_COLUMN_HELP = {
    "original": "the uncompressed text that each completion compresses",
    "question": "the uncompressed question asked about the compressed context (task 'qa')",
    "answer": "the gold answer: GSM8K's full solution text, or for qa a string or list of strings",
}


def _column(kwargs: Mapping[str, Any], name: str, n: int, reward: str) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        raise ValueError(
            f"reward {reward!r} needs the dataset column {name!r} ({_COLUMN_HELP[name]}), one value per row; "
            f"add it to the dataset, e.g. dataset.map(lambda row: {{'{name}': row[...]}}): trl passes every "
            "dataset column to reward functions")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions: the reward expects one "
                         "value per completion, as trl passes them")
    return values


def _tasks(kwargs: Mapping[str, Any], default: str, n: int) -> list[str]:
    tasks = kwargs.get("task")
    if tasks is None:
        return [default] * n
    tasks = list(tasks)
    if len(tasks) != n:
        raise ValueError(f"column 'task' has {len(tasks)} values for {n} completions: pass one task per row")
    for t in set(tasks):
        get_task(t)
    return tasks


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def _named(fn: RewardFunc, name: str, factory: RewardFactory, **attrs: Any) -> RewardFunc:
    """Give a built reward the name trl logs it under, the factory's documentation, and its settings."""
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = factory.__doc__
    for key, value in attrs.items():
        setattr(fn, key, value)
    return fn


def _weight_in_unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must be a number in [0, 1], e.g. 0.5")
    return float(value)


# ---------------------------------------------------------------- shared evaluator and feedback models

EvaluatorSpec = Union[str, os.PathLike, Mapping[str, Any], Evaluator]
FeedbackSpec = Union[str, os.PathLike, Mapping[str, Any], FeedbackModel]
_SHARED: dict[tuple[str, str], Any] = {}
_SHARED_LOCK = threading.Lock()


def _shared(kind: str, spec: Any, make: Callable[..., Any], valid: Iterable[str]) -> Any:
    """One instance per (kind, settings, cache folder) in this process: rewards naming the same model share it."""
    settings = {"model": os.fspath(spec)} if isinstance(spec, (str, os.PathLike)) else dict(spec)
    unknown = set(settings) - set(valid)
    if unknown or "model" not in settings:
        raise ValueError(f"{kind} settings {settings!r} are not valid: give 'model' and any of {sorted(valid)} "
                         f"(unknown: {sorted(unknown)})")
    key = (kind, json.dumps(settings, sort_keys=True, default=str) + "|" + str(cache_dir()))
    with _SHARED_LOCK:
        if key not in _SHARED:
            model = settings.pop("model")
            _SHARED[key] = make(model, **settings)
        return _SHARED[key]


def shared_evaluator(spec: EvaluatorSpec = DEFAULT_EVALUATOR) -> Evaluator:
    """An :class:`Evaluator` from a spec, a settings mapping (``{"model": ..., "device": "cuda"}``) or an instance."""
    if isinstance(spec, Evaluator):
        return spec
    return _shared("evaluator", spec, Evaluator, EVALUATOR_SETTINGS)


def shared_feedback(spec: FeedbackSpec = DEFAULT_CROSS_ENCODER) -> FeedbackModel:
    """A :class:`FeedbackModel` from a spec, a settings mapping (``{"model": ..., "kind": ...}``) or an instance."""
    if isinstance(spec, FeedbackModel):
        return spec
    return _shared("feedback", spec, FeedbackModel, ("model", "kind", "device", "batch_size"))


# ---------------------------------------------------------------- compression

def compression_score(ratio: float, target_rate: float = 0.5) -> float:
    """Reward of a compression ``ratio`` (compressed / original tokens): 1.0 at the target, less either side.

    Shape: linear from 1.0 at ``target_rate`` down to 0.0 at ratio 1.0 (no compression), continuing below 0
    for outputs longer than the original (floored at -1.0); and linear from 1.0 at the target down to 0.0 at
    ratio 0, so over-compression is penalised too. The reference design's piecewise ``r_comp`` had the same
    intent (best near 0.4, penalised on both sides) but jumped at 0.4 and 0.8 (0.7 -> 0.0 and 0.5 -> 0.04),
    which gives GRPO cliffs instead of a slope; this one is continuous, with its peak where you set it.

    >>> [compression_score(r, 0.5) for r in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 3.0)]
    [0.0, 0.5, 1.0, 0.5, 0.0, -1.0, -1.0]
    """
    if ratio <= target_rate:
        return ratio / target_rate
    return max(-1.0, (1.0 - ratio) / (1.0 - target_rate))


@register_reward("compression")
def compression_reward(*, target_rate: float = 0.5, tokenizer: str = "words") -> RewardFunc:
    """Compression ratio shaped around ``target_rate`` (see :func:`compression_score`), counted in ``tokenizer``.

    An empty completion scores -1.0 (never a valid compression of a non-empty text); a row whose original is
    empty scores ``None`` (nothing to compress). Needs ``original``. With trl, the batch's mean ratio is
    also logged as the metric ``compression_ratio``.

    >>> fn = compression_reward(target_rate=0.5)
    >>> fn(prompts=["p"] * 4, completions=["a b", "a b c d", "a", ""], original=["a b c d"] * 4)
    [1.0, 0.0, 0.5, -1.0]
    """
    target_rate = check_rate(target_rate)
    if target_rate >= 1.0:
        raise ValueError(f"target_rate={target_rate!r} must be below 1: a target of no compression rewards nothing; "
                         "use e.g. 0.5")
    counter = get_counter(tokenizer)  # loaded now: a bad tokenizer spec fails when the recipe is built

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        texts = _texts(completions)
        originals = _column(kwargs, "original", len(texts), "compression")
        out: list[Optional[float]] = []
        ratios = []
        for original, text in zip(originals, texts):
            n_original = counter.count(original)
            if n_original == 0:
                out.append(None)
                continue
            n_text = counter.count(text)
            if n_text == 0:
                out.append(-1.0)
                continue
            ratios.append(n_text / n_original)
            out.append(compression_score(ratios[-1], target_rate))
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and ratios:
            log_metric("compression_ratio", sum(ratios) / len(ratios))
        return out

    return _named(reward, "compression", compression_reward, target_rate=target_rate, tokenizer=counter.name)


# ---------------------------------------------------------------- fidelity

@register_reward("fidelity")
def fidelity_reward(*, model: FeedbackSpec = DEFAULT_CROSS_ENCODER) -> RewardFunc:
    """The feedback model's fidelity score of (original, completion), in [0, 1]; needs ``original``.

    ``model``: a cross-encoder (default: the reference's ms-marco ranker; falls back to the embedded MiniLM
    bi-encoder where it cannot be had), ``"all-minilm-l6-v2"``, a settings mapping or a FeedbackModel.

    >>> fn = fidelity_reward(model="all-minilm-l6-v2")
    >>> s = fn(prompts=["p"] * 2, completions=["Janet has 16 eggs, eats 3.", "Stocks fell sharply."],
    ...        original=["Janet's ducks lay 16 eggs per day. She eats 3 for breakfast."] * 2)
    >>> s[0] > s[1]
    True
    """
    feedback = shared_feedback(model)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        texts = _texts(completions)
        originals = _column(kwargs, "original", len(texts), "fidelity")
        return [float(s) for s in feedback.score(originals, texts)]

    return _named(reward, "fidelity", fidelity_reward, feedback=feedback)


# ---------------------------------------------------------------- evaluator answers

def _gold_correctness(task: str, predicted: Any, gold: Any) -> float:
    if task == "math":
        numeric = isinstance(gold, (int, float)) and not isinstance(gold, bool)
        value = gold if numeric else extract_math_answer(str(gold))
        return float(answers_match("math", predicted, value))
    return qa_f1(predicted or "", gold)


def _questions(kwargs: Mapping[str, Any], tasks: Sequence[str], n: int, reward: str) -> list[Optional[str]]:
    if any(TASKS[t].needs_question for t in tasks):
        return _column(kwargs, "question", n, reward)
    return [None] * n


@register_reward("answer_agreement")
def answer_agreement_reward(*, evaluator: EvaluatorSpec = DEFAULT_EVALUATOR, task: str = "math",
                            agreement_weight: float = 0.5) -> RewardFunc:
    """Does the evaluator answer the compressed text as it answers the original (and correctly, given a gold)?

    Without an ``answer`` column: 1.0 when the two extracted answers agree (numeric tolerance for math,
    normalised exact match for qa), else 0.0. With one: ``agreement_weight * agree + (1 - agreement_weight) *
    correct``, where ``correct`` is 1/0 numeric match to the gold for math and SQuAD F1 to the best gold for qa
    (so the default 0.5 gives 1.0 for agreeing and right, 0.5 for either one alone). An empty completion scores
    0.0 without asking the evaluator. Needs ``original`` (and ``question`` for qa). Costs one generation per
    completion (the original's answer is cached after its first use); with small evaluators that rarely solve
    GSM8K this signal is sparse: prefer ``answer_likelihood`` as the dense one.

    >>> fn = answer_agreement_reward(evaluator="qwen2.5-coder-0.5b-instruct", task="math")  # doctest: +SKIP
    >>> fn(prompts=["p"], completions=["Ducks: 16 eggs/day, eats 3, bakes 4, sells rest at $2 each. $ per day?"],
    ...    original=["Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes muffins with "
    ...              "four. She sells the rest for $2 each. How much does she make every day?"],
    ...    answer=["16 - 3 - 4 = 9 eggs. 9 * 2 = $18.\\n#### 18"])  # doctest: +SKIP
    [1.0]
    """
    ev = shared_evaluator(evaluator)
    get_task(task)
    agreement_weight = _weight_in_unit("agreement_weight", agreement_weight)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        texts = _texts(completions)
        n = len(texts)
        originals = _column(kwargs, "original", n, "answer_agreement")
        tasks = _tasks(kwargs, task, n)
        questions = _questions(kwargs, tasks, n, "answer_agreement")
        golds = _column(kwargs, "answer", n, "answer_agreement") if kwargs.get("answer") is not None else [None] * n
        out: list[Optional[float]] = [0.0] * n
        for t in dict.fromkeys(tasks):  # one evaluator call per task, originals and completions together
            rows = [i for i in range(n) if tasks[i] == t and texts[i].strip()]
            if not rows:
                continue
            qs = [questions[i] for i in rows] * 2 if TASKS[t].needs_question else None
            answers = ev.answer(t, [originals[i] for i in rows] + [texts[i] for i in rows], qs)
            for j, i in enumerate(rows):
                agree = float(answers_match(t, answers[j].answer, answers[len(rows) + j].answer))
                if golds[i] is None:
                    out[i] = agree
                else:
                    correct = _gold_correctness(t, answers[len(rows) + j].answer, golds[i])
                    out[i] = agreement_weight * agree + (1.0 - agreement_weight) * correct
        return out

    return _named(reward, "answer_agreement", answer_agreement_reward, evaluator=ev, task=task,
                  agreement_weight=agreement_weight)


_GSM8K_CALC = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations: "<<16-3-4=9>>"


def gold_target(task: str, gold: Any) -> Optional[str]:
    """The reference reply an evaluator is scored on: GSM8K's solution without calculator annotations, or the
    first acceptable qa answer; ``None`` where there is none (an unanswerable SQuAD v2 row).

    >>> gold_target("math", "16 - 3 - 4 = <<16-3-4=9>>9 eggs.\\n#### 18")
    '16 - 3 - 4 = 9 eggs.\\n#### 18'
    """
    if gold is None:
        return None
    if task == "math":
        text = _GSM8K_CALC.sub("", str(gold)).strip()
    else:
        golds = [gold] if isinstance(gold, str) else [g for g in gold if isinstance(g, str) and g.strip()]
        text = golds[0].strip() if golds else ""
    return text or None


@register_reward("answer_likelihood")
def answer_likelihood_reward(*, evaluator: EvaluatorSpec = DEFAULT_EVALUATOR, task: str = "math") -> RewardFunc:
    """How likely the evaluator finds the gold answer given the completion, relative to given the original.

    ``exp(ll(gold | compressed) - ll(gold | original))`` clipped to [0, 1], where ``ll`` is the evaluator's
    teacher-forced mean log-probability per gold token (:meth:`Evaluator.loglikelihood`). So the reward is the
    ratio of the per-token (geometric-mean) probabilities: 1.0 when compression costs the evaluator nothing
    (or helps: a compression that removes distractors is not rewarded beyond 1), 0.5 when each gold token is
    half as likely. One forward pass per completion, no generation, and it does not need the evaluator to
    solve the task: the dense signal for small evaluators. The gold comes from the ``answer`` column (GSM8K:
    the full solution, calculator annotations removed; qa: the first gold string); rows without one score
    ``None``. An empty completion scores 0.0. Needs ``original``, ``answer`` (and ``question`` for qa).

    >>> fn = answer_likelihood_reward(evaluator={"model": "smollm2-135m-instruct", "cache": False}, task="qa")
    >>> s = fn(prompts=["p"] * 2, completions=["The Eiffel Tower is in Paris.", "It was finished in 1889."],
    ...        original=["The Eiffel Tower is in Paris. It was finished in 1889."] * 2,
    ...        question=["In which city is the Eiffel Tower?"] * 2, answer=[["Paris"]] * 2)
    >>> s[0] > s[1]
    True
    """
    ev = shared_evaluator(evaluator)
    get_task(task)

    def plan(completions: Sequence[Any], kwargs: Mapping[str, Any]) -> tuple[list[Optional[float]], list[int],
                                                                              list[str], list[str]]:
        """``(scores so far, rows to score, reader prompts: originals then compressions, targets twice)``."""
        texts = _texts(completions)
        n = len(texts)
        originals = _column(kwargs, "original", n, "answer_likelihood")
        golds = _column(kwargs, "answer", n, "answer_likelihood")
        tasks = _tasks(kwargs, task, n)
        questions = _questions(kwargs, tasks, n, "answer_likelihood")
        targets = [gold_target(t, g) for t, g in zip(tasks, golds)]
        out: list[Optional[float]] = [None if target is None else 0.0 for target in targets]
        rows = [i for i in range(n) if targets[i] is not None and texts[i].strip()]
        q = {i: questions[i] if TASKS[tasks[i]].needs_question else None for i in rows}
        eval_prompts = ([build_prompt(tasks[i], originals[i], q[i]) for i in rows]
                        + [build_prompt(tasks[i], texts[i], q[i]) for i in rows])
        return out, rows, eval_prompts, [targets[i] for i in rows] * 2

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        out, rows, eval_prompts, targets = plan(completions, kwargs)
        if not rows:
            return out
        ll = ev.loglikelihood(eval_prompts, targets)
        for j, i in enumerate(rows):
            out[i] = min(1.0, math.exp(ll[len(rows) + j] - ll[j]))
        return out

    def requests(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[ReaderRequest]:
        _, _, eval_prompts, targets = plan(completions, kwargs)
        return [ReaderRequest(p, target=t) for p, t in zip(eval_prompts, targets)]

    return _named(reward, "answer_likelihood", answer_likelihood_reward, evaluator=ev, task=task,
                  reader_requests=requests)


@register_reward("reader_accuracy")
def reader_accuracy_reward(*, evaluator: EvaluatorSpec = TRAINING_READER, task: str = "qa",
                           max_new_tokens: Optional[int] = None,
                           tasks: Optional[Sequence[str]] = None) -> RewardFunc:
    """The reader's own answer on the compressed prompt, scored against the gold: what the benchmarks measure.

    ``evaluator``: a reader spec (default :data:`~rlpc_core.evaluator.TRAINING_READER`, Qwen2.5-Coder-0.5B under
    llama.cpp; judge with the 1.5B, train with this one, so the policy is measured by a reader it never trained
    against). Per completion, with the reader's fixed prompt for the row's task (the question asked separately,
    never compressed): qa ``0.5 * contains + 0.5 * F1`` (the reply holds a gold answer; partial credit for partial
    overlap); math and mc 1.0 for the right number or letter, else 0.0. Sparse next to ``answer_likelihood`` (a
    generation per completion; the reader's answers are cached by prompt), so weigh the two together. Needs
    ``answer`` (and ``question`` for qa and mc); rows without a gold score ``None``; an empty completion 0.0.
    ``tasks``: the row tasks to score (others score ``None``: no signal, no cost), e.g. ``[qa, mc]`` where a
    math row's generation would be a whole worked solution per completion and ``answer_likelihood`` covers it.

    >>> fn = reader_accuracy_reward(evaluator="llamacpp:smollm2-135m-instruct", task="qa")  # doctest: +SKIP
    """
    ev = shared_evaluator(evaluator)
    get_task(task)
    scored = None if tasks is None else {get_task(t).name for t in tasks}

    def plan(completions: Sequence[Any], kwargs: Mapping[str, Any]):
        """``(texts, golds, scores so far, [(task, rows, questions or None)])``: one reader call per task."""
        texts = _texts(completions)
        n = len(texts)
        golds = _column(kwargs, "answer", n, "reader_accuracy")
        row_tasks = _tasks(kwargs, task, n)
        questions = _questions(kwargs, row_tasks, n, "reader_accuracy")
        out: list[Optional[float]] = [None if g is None or (scored is not None and t not in scored) else 0.0
                                      for g, t in zip(golds, row_tasks)]
        calls = []
        for t in dict.fromkeys(row_tasks):
            if scored is not None and t not in scored:
                continue
            rows = [i for i in range(n) if row_tasks[i] == t and golds[i] is not None and texts[i].strip()]
            if rows:
                calls.append((t, rows, [questions[i] for i in rows] if TASKS[t].needs_question else None))
        return texts, golds, out, calls

    def requests(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[ReaderRequest]:
        texts, _, _, calls = plan(completions, kwargs)
        n_new = ev.max_new_tokens if max_new_tokens is None else max_new_tokens
        return [ReaderRequest(build_prompt(t, texts[i], qs[j] if qs else None), max_new_tokens=n_new,
                              stop=tuple(TASKS[t].stop))
                for t, rows, qs in calls for j, i in enumerate(rows)]

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        texts, golds, out, calls = plan(completions, kwargs)
        for t, rows, qs in calls:
            answers = ev.answer(t, [texts[i] for i in rows], qs, max_new_tokens=max_new_tokens)
            for i, a in zip(rows, answers):
                g = golds[i]
                golds_i = [g] if isinstance(g, str) else list(g)
                if t in ("math", "math-fewshot"):
                    golds_i = [str(extract_math_answer(golds_i[0]) if "####" in golds_i[0] else golds_i[0])]
                sc = score_answer(t, a.text, a.answer, golds_i)
                out[i] = 0.5 * sc["contains"] + 0.5 * sc["f1"] if "f1" in sc else sc["accuracy"]
        return out

    return _named(reward, "reader_accuracy", reader_accuracy_reward, evaluator=ev, task=task,
                  reader_requests=requests)


# ---------------------------------------------------------------- answer span (qa, evaluator-free)

def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def answer_survives(compressed: str, answers: Sequence[str]) -> bool:
    """Whether any gold answer appears in ``compressed`` (case- and whitespace-insensitive): the harness's
    answer-span survival, so the reward trains on exactly what the benchmark reports."""
    hay = _squash(compressed)
    return any(_squash(a) and _squash(a) in hay for a in answers)


def answer_span_score(compressed: str, answers: Sequence[str], partial: float = 0.5) -> float:
    """1.0 when a gold answer survives whole; else ``partial`` times the best share of an answer's words kept.

    The partial credit makes the signal dense (keeping "Seine" of "the Seine river" beats keeping nothing) while
    whole survival stays worth the most.

    >>> answer_span_score("The river Seine flows", ["the Seine river"]), answer_span_score("Paris.", ["Paris"])
    (0.5, 1.0)
    """
    if answer_survives(compressed, answers):
        return 1.0
    kept = {normalize(w) for w in compressed.split()}
    best = 0.0
    for a in answers:
        words = [normalize(w) for w in a.split() if normalize(w)]
        if words:
            best = max(best, sum(w in kept for w in words) / len(words))
    return partial * best


@register_reward("answer_span")
def answer_span_reward(*, partial: float = 0.5) -> RewardFunc:
    """Does the gold answer survive in the compressed context (qa rows; math rows score ``None``)?

    :func:`answer_span_score`: 1.0 for a whole surviving answer, else ``partial`` x the share of its words kept.
    Evaluator-free and instant: the direct form of the harness's answer-span survival. Needs ``answer`` (a string
    or a list of acceptable strings) and ``task`` (rows of task ``math`` score ``None``; default ``qa``).

    >>> fn = answer_span_reward()
    >>> fn(prompts=["p"] * 2, completions=["Paris is the capital", "capital of France"], answer=[["Paris"]] * 2)
    [1.0, 0.0]
    """
    partial = _weight_in_unit("partial", partial)

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        texts = _texts(completions)
        golds = _column(kwargs, "answer", len(texts), "answer_span")
        tasks = _tasks(kwargs, "qa", len(texts))
        out: list[Optional[float]] = []
        for text, gold, task in zip(texts, golds, tasks):
            answers = [gold] if isinstance(gold, str) else [g for g in (gold or []) if isinstance(g, str)]
            out.append(None if task != "qa" or not answers else answer_span_score(text, answers, partial))
        return out

    return _named(reward, "answer_span", answer_span_reward, partial=partial)


# ---------------------------------------------------------------- protected coverage

def _number_lemmas(text: str, digits_only: bool = False) -> set[str]:
    """Canonical forms of the numbers in ``text``: "$1,000." and "1000" are one number, "twelve" another."""
    found = set()
    for word in text.split():
        norm = normalize(word)
        if norm and is_number_word(norm) and (not digits_only or any(ch.isdigit() for ch in norm)):
            found.add(lemmatize(norm))
    return found


def coverage_score(original: str, compressed: str, *, numbers: bool = True, protect: Sequence[Any] = (),
                   keep_code: bool = True) -> float:
    """Share of the original's protected items found in ``compressed``; 1.0 when it has none.

    Items: every distinct number (digits or number words, as the importance graph detects them; compared in
    canonical form, so "$1,000" survives as "1000"), and every protected span (``<keep>`` markup, ``protect``
    strings and patterns, fenced code when ``keep_code``), which must appear verbatim.

    >>> coverage_score("Janet has 16 eggs and <keep>never on Sunday</keep>.", "Janet 16 eggs, never on Sunday")
    1.0
    >>> coverage_score("Buy 3 apples for $1,000 and twelve pears.", "Buy 3 apples for 1000.")
    0.6666666666666666
    """
    clean, spans = strip_markup(original)
    spans = merge_spans(spans + find_protected(clean, protect, keep_code=keep_code))
    try:
        compressed = strip_markup(compressed)[0]
    except ValueError:  # a rewriting policy's stray tag: score the text as written
        pass
    wanted = {clean[s:e] for s, e in spans}
    found = sum(span in compressed for span in wanted)
    total = len(wanted)
    if numbers:
        nums = _number_lemmas(clean)
        found += len(nums & _number_lemmas(compressed))
        total += len(nums)
    return 1.0 if total == 0 else found / total


@register_reward("protected_coverage")
def protected_coverage_reward(*, numbers: bool = True, protect: Sequence[str] = (), protect_regex: Sequence[str] = (),
                              keep_code: bool = True) -> RewardFunc:
    """Share of the original's protected items that survive in the completion (see :func:`coverage_score`).

    ``protect``: literal strings to keep; ``protect_regex``: regular expressions (strings, so recipes can hold
    them). Needs ``original``.

    >>> fn = protected_coverage_reward()
    >>> fn(prompts=["p"] * 2, completions=["Janet 16 eggs, eats 3", "Janet eggs"],
    ...    original=["Janet's ducks lay 16 eggs per day and she eats 3."] * 2)
    [1.0, 0.0]
    """
    patterns = check_protect([*protect, *(re.compile(p) for p in protect_regex)])

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        texts = _texts(completions)
        originals = _column(kwargs, "original", len(texts), "protected_coverage")
        return [coverage_score(o, t, numbers=numbers, protect=patterns, keep_code=keep_code)
                for o, t in zip(originals, texts)]

    return _named(reward, "protected_coverage", protected_coverage_reward, numbers=numbers, protect=patterns,
                  keep_code=keep_code)


# ---------------------------------------------------------------- format (rewriting policies)

def format_violations(original: str, completion: str) -> list[str]:
    """The format rules a rewrite breaks: ``empty``, ``chatter``, ``not_shorter``, ``invented_numbers``.

    >>> format_violations("Janet's ducks lay 16 eggs per day and she eats 3 of them.",
    ...                   'Here is the compressed prompt: "Janet 16 eggs, eats 4"')
    ['chatter', 'invented_numbers']
    """
    broken = rewrite_rules.violations(original, completion)
    return [rule for rule in broken if rule in rewrite_rules.FORMAT_RULES]


@register_reward("format")
def format_reward() -> RewardFunc:
    """Format of a rewrite: 1.0 when clean, 0.5 lower per broken rule, -1.0 when empty.

    Rules (see :func:`format_violations`): no preamble or chatter ("Here is", "Sure", "Compressed prompt:", a
    leading quote, "let me know"), fewer words than the original, no number that the original does not
    contain (the same check :class:`~rlpc_core.Compressor` applies before it accepts a rewrite). Scores: 1.0,
    0.5, 0.0, -0.5 for 0-3 broken rules; -1.0 for an empty output. Needs ``original``.

    >>> fn = format_reward()
    >>> fn(prompts=["p"] * 3, completions=["Janet 16 eggs, eats 3.", "Sure! Janet 16 eggs.", ""],
    ...    original=["Janet's ducks lay 16 eggs per day. She eats 3."] * 3)
    [1.0, 0.5, -1.0]
    """

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        texts = _texts(completions)
        originals = _column(kwargs, "original", len(texts), "format")
        out: list[Optional[float]] = []
        for o, t in zip(originals, texts):
            broken = format_violations(o, t)
            out.append(-1.0 if broken == ["empty"] else 1.0 - 0.5 * len(broken))
        return out

    return _named(reward, "format", format_reward)


# ---------------------------------------------------------------- the registry's front door

def _import_reward(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import reward {path!r} ({type(err).__name__}: {err}); write it as "
                         "'package.module:function' (or 'package.module.function') importable from here") from err
    if not callable(obj):
        raise ValueError(f"reward {path!r} is a {type(obj).__name__}, not a function "
                         "fn(prompts, completions, **kwargs)")
    return obj


def get_reward(name: str, **settings: Any) -> RewardFunc:
    """A reward function by registered name (``settings`` go to its factory), or by dotted import path.

    A dotted path (``package.module:function`` or ``package.module.function``) names a function in trl's
    contract; ``settings`` are then passed to it as keyword arguments on every call.

    >>> fn = get_reward("compression", target_rate=0.4)
    >>> fn.__name__, fn.target_rate
    ('compression', 0.4)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward name {name!r} must be a non-empty str: one of {', '.join(reward_names())}, "
                         "or a dotted path 'package.module:function'")
    if name in REWARDS:
        factory = REWARDS[name]
        try:
            inspect.signature(factory).bind(**settings)
        except TypeError:
            valid = [p for p in inspect.signature(factory).parameters]
            raise ValueError(f"reward {name!r} got unknown setting(s) {sorted(set(settings) - set(valid))}: its "
                             f"settings are {', '.join(valid) or '(none)'}") from None
        return factory(**settings)
    if "." in name or ":" in name:
        fn = _import_reward(name)
        # A partial keeps the user's function untouched; update_wrapper gives it the name trl logs.
        wrapped = functools.update_wrapper(functools.partial(fn, **settings), fn)
        return wrapped  # type: ignore[return-value]
    close = difflib.get_close_matches(name, list(REWARDS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown reward {name!r}{hint}: valid rewards are {', '.join(reward_names())}; or pass a "
                     "dotted path 'package.module:function' to a function fn(prompts, completions, **kwargs)")


_SPEC_KEYS = ("name", "weight", "kwargs")


def prefetch_rewards(funcs: Sequence[Callable[..., Any]], prompts: Sequence[Any], completions: Sequence[Any],
                     **kwargs: Any) -> int:
    """Before calling ``funcs`` on a batch: compute what their evaluators will be asked, per evaluator in one pass
    (:meth:`Evaluator.prefetch`: one prefill serves a prompt's likelihood and its reply). The rewards then read
    it from the cache. Rewards without ``reader_requests`` are left alone; returns the entries computed."""
    by_evaluator: dict[int, tuple[Evaluator, list[ReaderRequest]]] = {}
    for fn in funcs:
        plan = getattr(fn, "reader_requests", None)
        ev = getattr(fn, "evaluator", None)
        if plan is None or not isinstance(ev, Evaluator):
            continue
        by_evaluator.setdefault(id(ev), (ev, []))[1].extend(plan(prompts, completions, **kwargs))
    return sum(ev.prefetch(reqs) for ev, reqs in by_evaluator.values())


def build_rewards(specs: Iterable[Union[str, Mapping[str, Any]]]) -> tuple[list[RewardFunc], list[float]]:
    """``(reward_funcs, reward_weights)`` for ``GRPOTrainer`` from a recipe's ``rewards:`` list.

    Each item is ``{"name": ..., "weight": 1.0, "kwargs": {...}}`` (weight and kwargs optional) or just a
    name. Two rewards with the same name are logged as ``name`` and ``name_2``.

    >>> funcs, weights = build_rewards([{"name": "compression", "weight": 2.0, "kwargs": {"target_rate": 0.4}},
    ...                                 "format", {"name": "compression"}])
    >>> [f.__name__ for f in funcs], weights
    (['compression', 'format', 'compression_2'], [2.0, 1.0, 1.0])
    """
    if isinstance(specs, (str, Mapping)) or not isinstance(specs, Iterable):
        raise ValueError(f"rewards must be a list of {{name, weight, kwargs}} items, got {type(specs).__name__}; "
                         "wrap a single reward in a list")
    funcs: list[RewardFunc] = []
    weights: list[float] = []
    seen: Counter[str] = Counter()
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            spec = {"name": spec}
        if not isinstance(spec, Mapping):
            raise ValueError(f"rewards[{i}] = {spec!r} must be a name or a mapping with keys {', '.join(_SPEC_KEYS)}")
        unknown = set(spec) - set(_SPEC_KEYS)
        if unknown:
            raise ValueError(f"rewards[{i}] has unknown key(s) {sorted(unknown)}: valid keys are "
                             f"{', '.join(_SPEC_KEYS)} (a reward's own settings go under 'kwargs')")
        weight = spec.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"rewards[{i}].weight={weight!r} must be a finite number, e.g. 1.0")
        kwargs = spec.get("kwargs") or {}
        if not isinstance(kwargs, Mapping):
            raise ValueError(f"rewards[{i}].kwargs={kwargs!r} must be a mapping of settings, e.g. {{target_rate: 0.5}}")
        fn = get_reward(spec.get("name"), **kwargs)
        seen[fn.__name__] += 1
        if seen[fn.__name__] > 1:
            fn.__name__ = f"{fn.__name__}_{seen[fn.__name__]}"
        funcs.append(fn)
        weights.append(float(weight))
    if not funcs:
        raise ValueError("rewards is empty: GRPO needs at least one reward, e.g. [{name: compression}]")
    return funcs, weights


__all__ = ["REWARDS", "RewardFunc", "answer_agreement_reward", "answer_likelihood_reward", "build_rewards",
           "completion_text", "compression_reward", "compression_score", "coverage_score", "fidelity_reward",
           "format_reward", "format_violations", "get_reward", "gold_target", "prefetch_rewards", "protected_coverage_reward",
           "reader_accuracy_reward", "register_reward", "reward_names", "shared_evaluator", "shared_feedback"]
