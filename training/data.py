"""Evaluation data: one :class:`Example` shape for math, QA and long-transcript summarisation.

A dataset spec is one of

* a name: ``gsm8k`` (GSM8K, split ``test`` by default), ``squad`` (the SQuAD v2 dev subset, answerable questions
  only), ``nq`` (NQ-open with its gold passage), ``qmsum`` (QMSum test meetings with their specific queries), read
  from the shared data folder (``--data-dir``, default ``../shared/data`` beside the repository). SQuAD and NQ
  also have ``train`` and ``heldout`` partitions (:func:`partition_of`): disjoint, for training on QA and
  reporting on rows never trained on;
* settings built from those files: ``squad-multi`` (HotpotQA-style: each question's paragraph among nine
  other paragraphs of the same article, in a seeded order; ``train``/``heldout`` partitions by article as for
  ``squad``), ``nq-20docs`` (a real RAG context: each NQ question with its 20 retrieved passages, the gold one
  at a seeded depth, ~2k words; partitioned as ``nq``) and ``gsm8k-fewshot`` (LLMLingua's GSM8K setting: worked
  solutions from GSM8K *train*, ~2k tokens, as the text to compress, the test question kept whole: task
  ``math-fewshot``);
* a path to a JSONL file: rows in one of those four formats are recognised by their fields; any other file
  names its fields (``text_field``, ``question_field``, ``answer_field``);
* ``hf:ORG/NAME[:CONFIG]`` for users with the Hugging Face hub (``datasets.load_dataset``, imported only then),
  e.g. ``hf:openai/gsm8k:main`` or ``hf:rajpurkar/squad_v2`` (split ``validation``); rows are recognised the
  same way.

Sampling is deterministic: rows are shuffled with a fixed seed and the first ``limit`` are taken, so every method
of a run, and every run with the same seed, sees the same rows.

    >>> rows = load("gsm8k", limit=3, seed=0)          # doctest: +SKIP
    >>> rows[0].task, rows[0].answers                    # doctest: +SKIP
    ('math', ('18',))
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

TASKS = ("math", "qa", "summary", "math-fewshot", "mc", "prompt")

#: Named datasets: file (relative to the data folder) per split, the task, and the format of its rows.
NAMED: Mapping[str, dict[str, Any]] = {
    "gsm8k": {"files": {"test": "gsm8k/test.jsonl", "train": "gsm8k/train.jsonl"}, "default_split": "test",
              "format": "gsm8k", "hub": ("openai/gsm8k", "main")},
    "squad": {"files": {s: "squad_v2_dev_subset/squad_v2_dev_first5articles.jsonl" for s in ("validation", "train", "heldout")},
              "default_split": "validation", "format": "squad", "hub": ("rajpurkar/squad_v2", None)},
    "nq": {"files": {s: "nq_open_oracle/nq_open_oracle_first500.jsonl" for s in ("test", "train", "heldout")},
           "default_split": "test", "format": "nq", "hub": None},
    "qmsum": {"files": {"test": "qmsum/test.jsonl"}, "default_split": "test", "format": "qmsum", "hub": None},
    "squad-multi": {"files": {s: "squad_v2_dev_subset/squad_v2_dev_first5articles.jsonl" for s in ("train", "heldout")},
                    "default_split": "heldout", "format": "squad-multi", "hub": None},
    "gsm8k-fewshot": {"files": {"test": "gsm8k/test.jsonl"}, "default_split": "test", "format": "gsm8k-fewshot",
                      "hub": None, "demonstrations": "gsm8k/train.jsonl"},
    # two parts, read in order (each file stays under the data folder's size limit)
    "nq-20docs": {"files": {s: ("nq_open_20docs/nq-open-20_total_documents_gold_at_0.first441.part1.jsonl",
                                "nq_open_20docs/nq-open-20_total_documents_gold_at_0.first441.part2.jsonl")
                            for s in ("test", "train", "heldout")},
                  "default_split": "heldout", "format": "nq-docs", "hub": None},
}

#: squad-multi: paragraphs per context (the question's own and nine distractors from its article, as HotpotQA's
#: distractor setting has ten); ~1.3k tokens, what a retriever's top-10 looks like.
MULTI_PARAGRAPHS = 10
#: nq-20docs: how a retrieved passage reads in the context (Lost in the Middle's document line, without its
#: number: a compressor that drops documents would leave the numbering with gaps).
NQ_DOCUMENT = "(Title: {title}) {text}"

#: gsm8k-fewshot: worked examples are added until their words reach this (~2k tokens, as LLMLingua's GSM8K
#: prompt), picked from GSM8K train by a seeded shuffle; the same demonstrations precede every test question.
FEWSHOT_WORDS = 1300


#: SQuAD articles whose questions form the ``train`` partition of the shared dev subset (the other three articles
#: are ``heldout``): split by article, so no held-out passage, and no passage on the same topic, is trained on.
SQUAD_TRAIN_ARTICLES = frozenset({"Computational_complexity_theory", "Southern_California"})


def nq_partition(title: str) -> str:
    """``train`` for about 2 in 5 NQ rows, ``heldout`` for the rest, by a stable hash of the gold passage's title
    (by passage, not question: two questions on one passage land on the same side)."""
    return "train" if hashlib.sha256(title.strip().encode("utf-8")).digest()[0] % 5 < 2 else "heldout"


def partition_of(fmt: str, row: Mapping[str, Any]) -> Optional[str]:
    """Which partition (``train`` / ``heldout``) of the shared QA files a raw row belongs to.

    The shared SQuAD and NQ files are evaluation sets without a train split; training a compressor on QA needs
    rows it will never be measured on. ``validation`` / ``test`` (every row) stay what the first benchmarks used.
    """
    if fmt == "squad":
        return "train" if row.get("title") in SQUAD_TRAIN_ARTICLES else "heldout"
    if fmt == "nq":
        ctxs = row.get("ctxs") or [{}]
        return nq_partition(str(ctxs[0].get("title") or row.get("question", "")))
    return None


@dataclass(frozen=True)
class Example:
    """One evaluation row: what gets compressed, the question it must still answer, and the gold answers."""

    #: Stable row id (the dataset's own id where it has one, else ``<name>-<split>-<index>``).
    id: str
    #: ``math`` (text is the whole problem), ``qa`` (text is the context, question asked about it) or ``summary``.
    task: str
    #: What gets compressed: the GSM8K question, the QA context, the meeting transcript.
    text: str
    #: ``None`` for math; the QA question; the QMSum query. Never compressed.
    question: Optional[str]
    #: Gold answers: GSM8K's final number (after ``####``), every SQuAD/NQ answer string, QMSum's summary.
    answers: tuple[str, ...]
    #: GSM8K's full worked solution (ending in ``#### N``), else ``None``.
    solution: Optional[str] = None
    #: Units of ``text`` a compressor may rank as wholes (paragraphs, demonstrations), when the text has them.
    units: Optional[tuple[str, ...]] = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "task": self.task, "text": self.text, "question": self.question,
                "answers": list(self.answers), "solution": self.solution,
                "units": list(self.units) if self.units is not None else None}


class DataError(ValueError):
    """A dataset spec cannot be loaded; the message names the value, the rule and the fix."""


def default_data_dir() -> Path:
    """``../shared/data`` beside the repository (where the project's machines keep the evaluation sets)."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ---------------------------------------------------------------- row converters (one row -> Examples)

_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$")


def gsm8k_answer(solution: str) -> str:
    """The final answer after ``####`` in a GSM8K solution, commas removed (``"#### 1,000"`` -> ``"1000"``)."""
    m = _GSM8K_FINAL.search(solution.strip())
    if not m:
        raise DataError(f"GSM8K solution has no '#### answer' line: {solution[-80:]!r}; is this a GSM8K row?")
    return m.group(1).replace(",", "").strip()


def _gsm8k_rows(row: Mapping[str, Any], rid: str) -> list[Example]:
    solution = str(row["answer"])
    return [Example(id=str(row.get("id", rid)), task="math", text=str(row["question"]), question=None,
                    answers=(gsm8k_answer(solution),), solution=solution)]


def _dedupe(items: Iterable[Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in items:
        s = str(item).strip()
        if s:
            seen.setdefault(s, None)
    return tuple(seen)


def _squad_rows(row: Mapping[str, Any], rid: str) -> list[Example]:
    answers = row.get("answers") or {}
    texts = answers.get("text", []) if isinstance(answers, Mapping) else answers
    golds = _dedupe(texts)
    if row.get("is_impossible") or not golds:  # unanswerable: no gold span to survive or to score
        return []
    return [Example(id=str(row.get("id", rid)), task="qa", text=str(row["context"]), question=str(row["question"]),
                    answers=golds)]


def _nq_rows(row: Mapping[str, Any], rid: str) -> list[Example]:
    ctxs = row.get("ctxs") or []
    if not ctxs:
        return []
    golds = _dedupe(row.get("answers") or [])
    if not golds:
        return []
    return [Example(id=str(row.get("id", rid)), task="qa", text=str(ctxs[0]["text"]), question=str(row["question"]),
                    answers=golds)]


def qmsum_transcript(turns: Sequence[Mapping[str, Any]]) -> str:
    """A QMSum meeting as ``Speaker: text`` lines, one per turn."""
    return "\n".join(f"{t.get('speaker', '').strip()}: {' '.join(str(t.get('content', '')).split())}" for t in turns)


def _qmsum_rows(row: Mapping[str, Any], rid: str) -> list[Example]:
    transcript = qmsum_transcript(row["meeting_transcripts"])
    out = []
    for j, q in enumerate(row.get("specific_query_list") or []):
        out.append(Example(id=f"{rid}-q{j}", task="summary", text=transcript, question=str(q["query"]),
                           answers=_dedupe([q.get("answer", "")])))
    return out


LETTERS = "ABCDEFGHIJ"


def options_block(question: str, options: Sequence[str]) -> str:
    """The question followed by its lettered options, one per line: ``(A) red``."""
    if not 2 <= len(options) <= len(LETTERS):
        raise DataError(f"a multiple-choice row needs 2 to {len(LETTERS)} options, got {len(options)}")
    return question.rstrip() + "\n" + "\n".join(f"({LETTERS[i]}) {str(o).strip()}" for i, o in enumerate(options))


def _mc_rows(row: Mapping[str, Any], rid: str) -> list[Example]:
    """``{"context", "question", "options": [...], "answer"}``; the answer is a letter, an index or the option text."""
    options = [str(o) for o in row["options"]]
    answer = row["answer"]
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(options):
        letter = LETTERS[answer]
    elif isinstance(answer, str) and answer.strip().strip("()").upper() in LETTERS[: len(options)]:
        letter = answer.strip().strip("()").upper()
    elif isinstance(answer, str) and answer.strip() in [o.strip() for o in options]:
        letter = LETTERS[[o.strip() for o in options].index(answer.strip())]
    else:
        raise DataError(f"row {rid}: answer {answer!r} is neither a letter A-{LETTERS[len(options) - 1]}, an option "
                        "index nor one of the options' texts")
    return [Example(id=str(row.get("id", rid)), task="mc", text=str(row["context"]),
                    question=options_block(str(row["question"]), options), answers=(letter,))]


def _prompt_rows(row: Mapping[str, Any], rid: str) -> list[Example]:
    """``{"prompt", "reference"}``: a whole prompt (compressed whole) and the reply it should get."""
    reference = str(row["reference"]).strip()
    if not reference:
        return []
    return [Example(id=str(row.get("id", rid)), task="prompt", text=str(row["prompt"]), question=None,
                    answers=(reference,))]


CONVERTERS: Mapping[str, Callable[[Mapping[str, Any], str], list[Example]]] = {
    "gsm8k": _gsm8k_rows, "squad": _squad_rows, "nq": _nq_rows, "qmsum": _qmsum_rows, "mc": _mc_rows,
    "prompt": _prompt_rows,
}


def detect_format(row: Mapping[str, Any]) -> Optional[str]:
    """Recognise a row of one of the known formats by its fields (``None`` when it is none of them)."""
    keys = set(row)
    if "meeting_transcripts" in keys:
        return "qmsum"
    if {"context", "question", "options", "answer"} <= keys:
        return "mc"
    if {"prompt", "reference"} <= keys:
        return "prompt"
    if {"ctxs", "question", "answers"} <= keys:
        return "nq"
    if {"context", "question", "answers"} <= keys:
        return "squad"
    if {"question", "answer"} <= keys and "####" in str(row["answer"]):
        return "gsm8k"
    return None


def _fields_converter(text_field: str, question_field: Optional[str], answer_field: Optional[str],
                      task: Optional[str]) -> Callable[[Mapping[str, Any], str], list[Example]]:
    # Without a question, a row with an answer is a self-contained problem (math); with one it is QA.
    task = task or ("qa" if question_field else "math" if answer_field else "summary")

    def convert(row: Mapping[str, Any], rid: str) -> list[Example]:
        for name in (text_field, question_field, answer_field):
            if name and name not in row:
                raise DataError(f"row {rid} has no field {name!r} (it has {sorted(row)}); pass the right "
                                "--text-field / --question-field / --answer-field")
        raw = row[answer_field] if answer_field else ()
        if isinstance(raw, Mapping):  # SQuAD-style {"text": [...]}
            raw = raw.get("text", [])
        answers = _dedupe(raw if isinstance(raw, (list, tuple)) else [raw])
        solution = None
        if task == "math" and answers and "####" in answers[0]:
            solution, answers = answers[0], (gsm8k_answer(answers[0]),)
        return [Example(id=str(row.get("id", rid)), task=task, text=str(row[text_field]),
                        question=str(row[question_field]) if question_field else None, answers=answers,
                        solution=solution)]

    return convert


# ---------------------------------------------------------------- settings built from whole files

def squad_multi(rows: Iterable[Mapping[str, Any]], *, paragraphs: int = MULTI_PARAGRAPHS) -> list[Example]:
    """HotpotQA-style contexts: each answerable question's paragraph among ``paragraphs - 1`` others of its article.

    Distractors come from the same article (same topic, many shared names: the hard kind), chosen and ordered by
    a generator seeded with the question's id, so a row is the same in every run and the gold paragraph's
    position is uniform over the context. Paragraphs are separated by blank lines.
    """
    rows = list(rows)
    by_title: dict[str, list[str]] = {}
    for r in rows:
        ctxs = by_title.setdefault(str(r.get("title")), [])
        if r["context"] not in ctxs:
            ctxs.append(r["context"])
    out = []
    for i, r in enumerate(rows):
        base = _squad_rows(r, f"squad-multi-{i}")
        if not base:
            continue
        e = base[0]
        others = [c for c in by_title[str(r.get("title"))] if c != e.text]
        rng = random.Random(f"squad-multi|{e.id}")
        chosen = rng.sample(others, min(len(others), paragraphs - 1)) + [e.text]
        rng.shuffle(chosen)
        out.append(Example(id=f"{e.id}-multi", task="qa", text="\n\n".join(chosen), question=e.question,
                           answers=e.answers, units=tuple(chosen)))
    return out


def nq_documents(indexed_rows: Iterable[tuple[int, Mapping[str, Any]]]) -> list[Example]:
    """NQ-open with 20 retrieved passages (one gold, 19 distractors): the shape of a real RAG context, ~2k words.

    The file always puts the gold passage first, where truncation would keep it by construction; here the
    passages are shuffled by a generator seeded with the question, so the gold's depth is uniform over the
    context and the same in every run. Each passage reads ``(Title: ...) text``; passages are separated by blank
    lines and are the row's units. ``indexed_rows`` pairs each raw row with its place in the file (the id).
    """
    out = []
    for i, r in indexed_rows:
        golds = _dedupe(r.get("answers") or [])
        ctxs = r.get("ctxs") or []
        if not golds or not ctxs:
            continue
        docs = [NQ_DOCUMENT.format(title=str(c.get("title", "")).strip(), text=" ".join(str(c["text"]).split()))
                for c in ctxs]
        random.Random(f"nq-20docs|{r['question']}").shuffle(docs)
        out.append(Example(id=f"nq-20docs-{i}", task="qa", text="\n\n".join(docs), question=str(r["question"]),
                           answers=golds, units=tuple(docs)))
    return out


_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


def fewshot_demonstrations(train_rows: Sequence[Mapping[str, Any]], *, words: int = FEWSHOT_WORDS,
                           seed: int = 0) -> list[str]:
    """Worked GSM8K examples (``Question: ...\nAnswer: ...\n#### N``, calculator notes removed) from train rows,
    in a seeded order, until their words reach ``words``."""
    order = list(range(len(train_rows)))
    random.Random(f"gsm8k-fewshot|{seed}").shuffle(order)
    demos, total = [], 0
    for i in order:
        r = train_rows[i]
        solution = _GSM8K_CALC.sub("", str(r["answer"])).strip()
        demo = f"Question: {str(r['question']).strip()}\nAnswer: {solution}"
        demos.append(demo)
        total += len(demo.split())
        if total >= words:
            break
    return demos


def gsm8k_fewshot(test_rows: Iterable[Mapping[str, Any]], demonstrations: Sequence[str], label: str) -> list[Example]:
    text = "\n\n".join(demonstrations)
    out = []
    for i, r in enumerate(test_rows):
        e = _gsm8k_rows(r, f"{label}-{i}")[0]
        out.append(Example(id=f"{e.id}-fewshot", task="math-fewshot", text=text, question=e.text, answers=e.answers,
                           solution=e.solution, units=tuple(demonstrations)))
    return out


# ---------------------------------------------------------------- sources

def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{n} is not valid JSON ({err}); every line of a JSONL file must be one "
                                "JSON object") from err


def _hub_rows(spec: str, split: Optional[str]) -> tuple[Iterable[Mapping[str, Any]], str]:
    """Rows of ``hf:ORG/NAME[:CONFIG]``; ``split`` defaults to test, else validation, else train."""
    ident = spec[3:]
    name, _, config = ident.partition(":")
    try:
        import datasets
    except ImportError as err:
        raise DataError(f"dataset {spec!r} needs the `datasets` package; pip install 'rlpc[train]'") from err
    if split is None:
        splits = datasets.get_dataset_split_names(name, config or None)
        split = next((s for s in ("test", "validation", "train") if s in splits), splits[0])
    return datasets.load_dataset(name, config or None, split=split), split


def load(
    spec: str,
    *,
    data_dir: Union[str, Path, None] = None,
    split: Optional[str] = None,
    limit: Optional[int] = None,
    seed: int = 0,
    text_field: Optional[str] = None,
    question_field: Optional[str] = None,
    answer_field: Optional[str] = None,
    task: Optional[str] = None,
) -> list[Example]:
    """Load ``spec`` (a name, a JSONL path or ``hf:ORG/NAME[:CONFIG]``) as Examples, shuffled with ``seed``.

    ``limit`` takes the first N rows after the shuffle. ``text_field`` (with the optional question and answer
    fields and ``task``) reads any JSONL/hub rows; without it, rows must be in a known format.
    """
    if not isinstance(spec, str) or not spec:
        raise DataError(f"dataset={spec!r} must be a name ({', '.join(NAMED)}), a .jsonl path or hf:ORG/NAME")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit={limit!r} must be a positive integer (or None for every row)")
    if task is not None and task not in TASKS:
        raise DataError(f"task={task!r} is not one of {', '.join(TASKS)}")
    if (question_field or answer_field or task) and not text_field:
        raise DataError("--question-field, --answer-field and --task describe a custom file and need --text-field "
                        "too; pass the field that holds the text to compress")

    fmt: Optional[str] = None
    if spec in NAMED:
        info = NAMED[spec]
        split = split or info["default_split"]
        if split not in info["files"]:
            raise DataError(f"dataset {spec!r} has no split {split!r} here: available {sorted(info['files'])}")
        root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
        files = info["files"][split]
        names = (files,) if isinstance(files, str) else tuple(files)
        paths = [root / name for name in names]
        for path, name in zip(paths, names):
            if not path.is_file():
                hub = info["hub"]
                hint = (f", or load it from the Hugging Face hub as hf:{hub[0]}{':' + hub[1] if hub[1] else ''}"
                        if hub else "")
                raise DataError(f"dataset {spec!r} expects {path}, which does not exist (data folder {root}); pass "
                                f"--data-dir pointing at the folder holding {name}, or a JSONL path{hint}")
        rows: Iterable[Mapping[str, Any]] = (r for path in paths for r in _read_jsonl(path))
        fmt, label = info["format"], f"{spec}-{split}"
        if fmt == "nq-docs":
            # ids by the row's place in the file, before the partition filter: the same question keeps its id in
            # every split; partitioned by the gold passage's title as ``nq`` (the same questions, the same side)
            indexed = ((i, r) for i, r in enumerate(rows)
                       if split not in ("train", "heldout") or partition_of("nq", r) == split)
            return _shuffled(nq_documents(indexed), seed, limit, spec)
        if split in ("train", "heldout") and fmt in ("squad", "nq", "squad-multi"):
            part = split
            rows = (r for r in rows if partition_of("squad" if fmt == "squad-multi" else fmt, r) == part)
        if fmt == "squad-multi":
            return _shuffled(squad_multi(rows), seed, limit, spec)
        if fmt == "gsm8k-fewshot":
            demos_path = root / info["demonstrations"]
            if not demos_path.is_file():
                raise DataError(f"dataset {spec!r} takes its worked examples from {demos_path}, which does not exist; "
                                "pass --data-dir pointing at the folder holding gsm8k/train.jsonl")
            demos = fewshot_demonstrations(list(_read_jsonl(demos_path)))
            return _shuffled(gsm8k_fewshot(rows, demos, f"gsm8k-{split}"), seed, limit, spec)
    elif spec.startswith("hf:"):
        rows, split = _hub_rows(spec, split)
        label = spec[3:].replace("/", "-").replace(":", "-") + f"-{split}"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise DataError(f"dataset {spec!r} is neither a known name ({', '.join(NAMED)}), an hf:ORG/NAME id, nor an "
                            f"existing file (looked for {path.absolute()}); pass one of those")
        rows, label = _read_jsonl(path), path.stem

    if text_field:
        convert = _fields_converter(text_field, question_field, answer_field, task)
    else:
        convert = CONVERTERS[fmt] if fmt else None

    examples: list[Example] = []
    for i, row in enumerate(rows):
        if convert is None:
            found = detect_format(row)
            if found is None:
                raise DataError(f"cannot tell the format of {spec!r}: its rows have fields {sorted(row)}, none of the "
                                "known formats; write rows as {\"context\", \"question\", \"answers\"} (QA), "
                                "{\"prompt\", \"reference\"} or GSM8K's {\"question\", \"answer\"}, or, in "
                                "python -m training.evaluate, name the fields with --text-field (and --question-field, "
                                "--answer-field, --task)")
            convert = CONVERTERS[found]
        examples.extend(convert(row, f"{label}-{i}"))
    return _shuffled(examples, seed, limit, spec)


def _shuffled(examples: list[Example], seed: int, limit: Optional[int], spec: str) -> list[Example]:
    if not examples:
        raise DataError(f"dataset {spec!r} yielded no usable rows (unanswerable or empty rows are skipped)")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    if limit is not None:
        order = order[:limit]
    return [examples[i] for i in order]


def gsm8k(split: str = "test", *, hub: bool = False, **kwargs: Any) -> list[Example]:
    """GSM8K (``test`` by default): from the data folder, or from the hub (``openai/gsm8k``) with ``hub=True``."""
    return load("hf:openai/gsm8k:main" if hub else "gsm8k", split=split, **kwargs)


def squad(*, hub: bool = False, **kwargs: Any) -> list[Example]:
    """SQuAD v2 dev, answerable questions only: the shared subset, or ``rajpurkar/squad_v2`` with ``hub=True``."""
    if hub:
        return load("hf:rajpurkar/squad_v2", split=kwargs.pop("split", "validation"), **kwargs)
    return load("squad", **kwargs)


def nq(**kwargs: Any) -> list[Example]:
    """NQ-open with its gold passage (the "Lost in the Middle" oracle file); no hub copy has the passages."""
    return load("nq", **kwargs)


def qmsum(**kwargs: Any) -> list[Example]:
    """QMSum test meetings, one Example per specific query (the whole transcript is the text)."""
    return load("qmsum", **kwargs)


__all__ = ["CONVERTERS", "DataError", "Example", "FEWSHOT_WORDS", "LETTERS", "MULTI_PARAGRAPHS", "NAMED",
           "SQUAD_TRAIN_ARTICLES", "TASKS", "default_data_dir", "detect_format", "fewshot_demonstrations", "gsm8k",
           "gsm8k_answer", "gsm8k_fewshot", "load", "nq", "nq_documents", "nq_partition", "options_block", "partition_of", "qmsum",
           "qmsum_transcript", "squad", "squad_multi"]
