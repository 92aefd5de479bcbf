"""Benchmark compressors side by side: same rows, same rate, same token counter, peers in the same run.

    python -m training.evaluate --dataset squad --split heldout --methods graph,extractive,truncate,random,none \\
        --rate 0.33,0.5 --limit 200 --evaluator smollm2-135m-instruct --out benchmarks/results/squad

``--dataset``: ``gsm8k``, ``squad``, ``nq``, ``qmsum``, a ``PATH.jsonl`` or ``hf:ORG/NAME`` (see
:mod:`training.data`). ``--methods``: any rlpc policy name, a checkpoint folder (``Compressor.from_pretrained``),
the baselines of :mod:`training.baselines` (``random``, ``truncate``) and ``none`` (no compression: the baseline
every row's original-side figures come from). The published peers (LLMLingua, LongLLMLingua, Selective-Context)
are not part of the library: ``python -m benchmarks.evaluate`` is this command with them registered
(:func:`register_external` is how any compressor that runs outside this process plugs in).

Per (method, rate, row): the compressed text, its tokens in one named tokenizer (every method's output counted
by the same counter), compression latency per 1k input tokens, and the metrics of the task:

* math: number retention (all rows); evaluator answer agreement and accuracy on original vs compressed (generation,
  on the first ``--gen-limit`` rows only: a labelled sample); ``answer_likelihood``: the evaluator's mean
  log-prob of the gold solution given the compressed minus given the original question (all rows);
* qa: answer-span survival (all rows, evaluator-free); evaluator EM/F1 on original vs compressed (sample);
  likelihood of the first gold answer (all rows);
* summary (QMSum): latency and its growth with length, and fidelity;
* every task: fidelity (feedback model score of original vs compressed) on all rows, and its calibration against
  evaluator agreement where agreement was measured.

Writes ``OUT/metrics.json`` (config, versions, aggregates with bootstrap CIs), ``OUT/rows.jsonl`` (every record),
``OUT/report.md`` and PNG plots (quality against achieved rate, latency per method, latency against length).
Original-side evaluator outputs are computed once per row (and cached on disk by the evaluator).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import json
import os
import platform
import random
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from rlpc_core import rewrite_rules
from rlpc_core.backends import ReaderError
from rlpc_core.rewards import answer_survives
from training.baselines import register_baselines
from training.data import DataError, Example, load
from training.rates import AUTO
from training.stats import BOOTSTRAP, bootstrap_ci

NONE = "none"
#: Every reader reply of a run, beside its results (:class:`rlpc_core.evaluator.EvalCache`'s journal).
READER_JOURNAL = "reader_replies.jsonl"
SCALING_BINS = ((0, 256), (256, 1024), (1024, 4096), (4096, 16384), (16384, None))


# ---------------------------------------------------------------- small helpers

def number_strings(text: str) -> set[str]:
    """The distinct digit strings of ``text`` ("1,000", "3.5", "16")."""
    return {m.rstrip(".,") for m in rewrite_rules.NUMBER.findall(text)}


def number_retention(original: str, compressed: str) -> Optional[float]:
    nums = number_strings(original)
    if not nums:
        return None
    return len(nums & number_strings(compressed)) / len(nums)


def is_subsequence(small: Sequence[str], big: Sequence[str]) -> bool:
    it = iter(big)
    return all(any(w == b for b in it) for w in small)


def _mean(values: Sequence[Any]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------- memory

def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakRSS:
    """Peak resident memory while a block runs, as growth over the RSS at its start (MB).

    On Linux the kernel's high-water mark (VmHWM) is reset at the start (``/proc/self/clear_refs``), so each
    method's peak is its own. Elsewhere the process-lifetime peak is used, which can only over-report.
    """

    def __enter__(self) -> "PeakRSS":
        self.exact = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.exact = True
        except OSError:
            pass
        self.start = _rss_mb()
        self.peak_mb: Optional[float] = None
        return self

    def __exit__(self, *exc: Any) -> None:
        peak = None
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1]) / 1024
        except OSError:
            pass
        if peak is None:
            import resource

            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.peak_mb = max(0.0, peak - self.start)


# ---------------------------------------------------------------- methods

class MethodUnavailable(RuntimeError):
    """A method cannot run here (an external compressor's environment failed to build); the message says why."""


@dataclass(frozen=True)
class ExternalMethod:
    """A compressor that runs outside this process: a published peer in its own environment, a service.

    ``compress(requests, *, threads, log_path, progress, scorer)`` compresses ``{id, text, question, rate,
    contexts}`` requests, calls ``progress`` with each output as it arrives (``{id, text, seconds}``, seconds
    measured around the compression alone, or ``{id, error}``) so the harness stores it at once, and returns its
    run figures (``peak_mb``, ``worker_max_rss_mb``, ``load_seconds``, ``versions``, ``threads``). ``prepare(quiet)``
    builds or checks what it needs before any row runs, raising :class:`MethodUnavailable`: a failure comes early.
    """

    name: str
    compress: Callable[..., dict[str, Any]]
    prepare: Callable[[bool], None] = lambda quiet: None
    note: str = ""  # shown beside its figures in the report (what it is, e.g. "LLMLingua-1")
    meaningful: bool = True  # False: only its cost is real (e.g. randomly initialised weights)


EXTERNAL: dict[str, ExternalMethod] = {}


def register_external(method: ExternalMethod) -> None:
    """Make ``method.name`` a valid ``--methods`` entry (``benchmarks/peers.py`` registers LLMLingua's)."""
    EXTERNAL[method.name] = method


@dataclass(frozen=True)
class Method:
    label: str  # as shown in tables
    spec: str  # as given on the command line
    runs_in: str  # "baseline" | "in-process" | "peer-env" (an external method; the name kept for old results)
    meaningful: bool = True


def _not_meaningful() -> set[str]:
    return {name for name, m in EXTERNAL.items() if not m.meaningful}


#: ``graph+guide``: a policy with the default guide (rlpc_core.guide), a small reader that answers the query first
GUIDED = "+guide"
#: ``graph+oracle``: a diagnostic for --development runs only: the policy with a guide that "answers" each row's
#: gold answer, a perfect pointer to the answer. What it still loses, a guide cannot win back: the reader failing on
#: a compressed text that holds the answer, or an answer that does not fit the budget.
ORACLE = "+oracle"


class OracleGuide:
    """A guide that knows the gold answers: for a query, the first of its row's gold answers found in the text."""

    spec = "oracle"

    def __init__(self, examples: Sequence[Example]):
        self.golds: dict[str, list[str]] = {}
        for e in examples:
            self.golds.setdefault(_query(e) or "", []).extend(e.answers or ())

    def answer(self, text: str, query: str) -> str:
        low = text.lower()
        return next((a for a in self.golds.get(query, ()) if a and a.lower() in low), "")

    def runner_up(self, text: str, query: str, answer: str) -> None:
        return None  # it knows


def _base_policy(name: str) -> Optional[str]:
    """The policy of ``policy+guide`` or ``policy+oracle`` (``None`` for any other name)."""
    from rlpc_core import policy_names

    for suffix in (GUIDED, ORACLE):
        if name.endswith(suffix) and name[: -len(suffix)] in policy_names():
            return name[: -len(suffix)]
    return None


def resolve_methods(names: Sequence[str]) -> list[Method]:
    from rlpc_core import policy_names

    valid = set(policy_names()) | set(EXTERNAL) | {NONE}
    out: list[Method] = []
    for name in names:
        if name == NONE:
            out.append(Method(NONE, NONE, "baseline"))
        elif name in EXTERNAL:
            out.append(Method(name, name, "peer-env", EXTERNAL[name].meaningful))
        elif name in valid or _base_policy(name):
            out.append(Method(name, name, "in-process"))
        elif Path(name).expanduser().is_dir():
            out.append(Method(Path(name).expanduser().resolve().name, name, "in-process"))
        else:
            raise ValueError(f"unknown method {name!r}: use one of {', '.join(sorted(valid))}, or a checkpoint folder "
                             "written by Compressor.save_pretrained (LLMLingua and the other published peers: "
                             f"python -m benchmarks.evaluate, from a clone of the repository); a policy name + '{GUIDED}' "
                             f"adds the default guide (rlpc_core.guide), + '{ORACLE}' a guide that knows the gold answer "
                             "(--development only)")
    labels = [m.label for m in out]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods repeat a name: {labels}; list each method once")
    return out


def _make_compressor(method: Method, tokenizer: str):
    from rlpc_core import Compressor

    if Path(method.spec).expanduser().is_dir():
        return Compressor.from_pretrained(Path(method.spec).expanduser(), tokenizer=tokenizer)
    base = _base_policy(method.spec)
    if base is None:
        return Compressor(policy=method.spec, tokenizer=tokenizer)
    from rlpc_core.guide import DEFAULT_GUIDE

    # an oracle's guide is set by compress_all, which knows the rows' gold answers
    return Compressor(policy=base, tokenizer=tokenizer, guide=DEFAULT_GUIDE if method.spec.endswith(GUIDED) else None)


def check_guide(method: Method, compressor: Any) -> None:
    """A method with a guide must have a guide that answers: one that fails would compress every row without it
    (as a user's call does, saying why), and the figures would be the plain policy's under the guided label."""
    guide = getattr(compressor, "guide", None)
    if guide is None:
        return
    try:
        guide.answer("The depot opened in 1951.", "When did the depot open?")
    except Exception as err:
        raise ValueError(f"method {method.label!r}: its guide {guide.spec!r} cannot answer ({type(err).__name__}: "
                         f"{err}); fetch its model (rlpc models pull ALIAS --format gguf) or start its server, then "
                         "rerun") from None


def _query(e: Example) -> Optional[str]:
    # Few-shot examples are compressed once, without the question (LLMLingua's setting: one compressed block
    # serves every question); elsewhere compression is question-aware where the method can use a question.
    return e.question if e.task in ("qa", "summary", "mc") else None


def _record(e: Example, method: Method, rate: float, text: str, seconds: Optional[float], original_tokens: int,
            counter, fallback: Optional[str] = None, shared_by: int = 1) -> dict[str, Any]:
    compressed = counter.count(text)
    # the dynamic rate has no budget: the rate reached is the budget met
    budget = compressed if rate == AUTO else max(1, int(round(rate * original_tokens)))
    rec: dict[str, Any] = {
        "id": e.id, "method": method.label, "rate": rate, "task": e.task,
        "original_tokens": original_tokens, "compressed_tokens": compressed,
        "ratio": compressed / original_tokens if original_tokens else 1.0,
        "saved_tokens": original_tokens - compressed, "target_tokens": budget, "budget_met": compressed <= budget,
        "seconds": seconds, "ms_per_1k": (seconds * 1e6 / original_tokens) if seconds is not None and original_tokens else None,
        "shared_by": shared_by,
        "fallback": fallback, "subsequence": is_subsequence(text.split(), e.text.split()),
        "number_retention": number_retention(e.text, text) if e.task in ("math", "math-fewshot") else None,
        "answer_survival": (float(answer_survives(text, e.answers)) if e.task == "qa" else None),
        "text": text,
    }
    return rec


class CompressionStore:
    """Every compression of a run, appended to ``compressions.jsonl`` the moment it is made.

    With ``resume`` the entries already there are reused (same method label and spec, rate, text and question), so a
    stopped run restarts where it stopped; without it the file starts afresh. In-process methods' keys hold their
    configuration and a fingerprint of rlpc's code and weights (:func:`code_fingerprint`), so changed code compresses
    afresh; a peer's key holds its scorer, not its package's code: reuse stays opt-in.
    """

    def __init__(self, path: Path, *, resume: bool):
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}
        if resume and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
        self._fh = path.open("a" if resume else "w", encoding="utf-8")

    @staticmethod
    def key(method: Method, rate: float, text: str, query: Optional[str], extra: str = "") -> str:
        import hashlib

        payload = json.dumps([method.label, method.spec, extra, rate, text, query], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Optional[dict[str, Any]]:
        return self.entries.get(key)

    def put(self, key: str, entry: dict[str, Any]) -> None:
        entry = {"key": key, **entry}
        self.entries[key] = entry
        self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _files_digest(paths: Sequence[Path], root: Path) -> str:
    """One digest of several files: each one's path under ``root`` and its sha256."""
    import hashlib

    from rlpc_core.models import sha256_file

    h = hashlib.sha256()
    for f in sorted(paths):
        h.update(f"{f.relative_to(root)}\0{sha256_file(f)}\n".encode("utf-8"))
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _package_digest(root: Path) -> str:
    # once per run: every in-process method of a run shares it
    return _files_digest([f for f in root.rglob("*") if f.is_file() and (f.suffix == ".py" or
                                                                         "weights" in f.relative_to(root).parts)], root)


def code_fingerprint(method: Method) -> str:
    """What an in-process method's outputs depend on beyond its configuration: rlpc_core's source and shipped weights,
    and a checkpoint folder's files. In the compression key, so ``--resume`` never reuses a compression that code
    or weights changed since (the version number alone did not move with every change of the selection)."""
    import rlpc_core

    parts = [_package_digest(Path(rlpc_core.__file__).resolve().parent)]
    folder = Path(method.spec).expanduser()
    if folder.is_dir():
        parts.append(_files_digest([f for f in folder.iterdir() if f.is_file() and f.suffix in (".json", ".safetensors")],
                                   folder))
    return "-".join(parts)


def _has_dynamic_rate(method: Method, compressor: Any) -> bool:
    """Baselines and peers have no dynamic rate: their scores rank words, not relevant blocks."""
    if compressor is None:
        return method.runs_in == "baseline"
    return not getattr(compressor.policy, "words_only", False)  # building the policy loads no weights


def compress_all(methods: Sequence[Method], examples: Sequence[Example], rates: Sequence[float], *, tokenizer: str,
                 threads: int, out: Path, bar, resume: bool = False,
                 scorer: str = "smollm2-135m-instruct") -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every (method, rate, row) record, plus per-method run figures (peak memory, peer environment info).

    Each distinct (text, question, rate) is compressed once per method: rows that share a text (one few-shot block
    before every question) share its compression and its time (``shared_by`` says by how many rows).
    """
    from rlpc_core.tokens import get_counter

    counter = get_counter(tokenizer)
    originals = [counter.count(e.text) for e in examples]
    records: list[dict[str, Any]] = []
    info: dict[str, dict[str, Any]] = {}
    store = CompressionStore(out / "compressions.jsonl", resume=resume)
    try:
        for method in methods:
            bar.set_description(f"compress {method.label}")
            compressor = _make_compressor(method, tokenizer) if method.runs_in == "in-process" else None
            if method.spec.endswith(ORACLE):
                compressor._guide = OracleGuide(examples)  # a diagnostic's guide: not a reader spec a config can hold
            # what the outputs depend on besides the method's name: a peer's scorer; an in-process compressor's
            # whole configuration, rlpc's version and its code and weights (so --resume never reuses what older code
            # or other weights compressed)
            if method.runs_in == "peer-env":
                extra = scorer
            elif method.runs_in == "in-process":
                from rlpc_core import __version__

                extra = json.dumps([__version__, code_fingerprint(method), compressor.config.to_dict()], sort_keys=True)
            else:
                extra = ""
            jobs: dict[str, tuple[float, Example]] = {}
            users: dict[str, list[int]] = {}
            method_rates = [r for r in rates if r != AUTO or _has_dynamic_rate(method, compressor)]
            for rate in method_rates:
                for i, e in enumerate(examples):
                    k = store.key(method, rate, e.text, _query(e), extra)
                    jobs.setdefault(k, (rate, e))
                    users.setdefault(k, []).append(i)
            if method.runs_in == "baseline":
                info[method.label] = {"runs_in": "baseline", "peak_mb": None}
                done = {k: {"text": e.text, "seconds": None, "fallback": None} for k, (rate, e) in jobs.items()}
            elif method.runs_in == "peer-env":
                # a failure is not kept: a resumed run asks again (a service may have been down)
                todo = {k: v for k, v in jobs.items() if (store.get(k) or {}).get("text") is None}
                requests = [{"id": k, "text": e.text, "question": _query(e), "rate": rate,
                             "contexts": list(e.units) if e.units else None} for k, (rate, e) in todo.items()]

                def arrived(msg: dict[str, Any]) -> None:
                    entry = ({"text": msg["text"], "seconds": float(msg["seconds"]), "fallback": None}
                             if "text" in msg and "error" not in msg else
                             {"text": None, "seconds": None, "error": msg.get("error", "no output")})
                    store.put(str(msg["id"]), entry)
                    bar.update(len(users[str(msg["id"])]))

                bar.update(sum(len(users[k]) for k in jobs if k not in todo))
                run = EXTERNAL[method.spec].compress(requests, threads=threads, log_path=out / f"peer-{method.label}.log",
                                                     progress=arrived, scorer=scorer) if requests else None
                done = {}
                for k, (rate, e) in jobs.items():
                    got = store.get(k) or {}
                    if got.get("text") is None:
                        done[k] = {"text": e.text, "seconds": None,
                                   "fallback": f"{method.label} failed: {got.get('error', 'no output')}; prompt left uncompressed"}
                    else:
                        done[k] = got
                info[method.label] = {"runs_in": "peer-env", "scorer": scorer,
                                      **(run if run is not None else {"peak_mb": None, "resumed": True})}
            else:
                done = {}
                with PeakRSS() as mem:
                    # warm-up: loads the policy's model and tokenizer once, outside every measured row
                    compressor.compress(examples[0].text, rate=rates[0], query=_query(examples[0]))
                    for k, (rate, e) in jobs.items():
                        got = store.get(k)
                        if got is None:
                            res = compressor.compress(e.text, rate=rate, query=_query(e))
                            got = {"text": res.text, "seconds": res.seconds, "fallback": res.fallback}
                            store.put(k, got)
                        done[k] = got
                        bar.update(len(users[k]))
                info[method.label] = {"runs_in": "in-process", "peak_mb": mem.peak_mb, "peak_exact": mem.exact,
                                      "policy": compressor.config.policy}
            for k, (rate, _) in jobs.items():
                got = done[k]
                for i in users[k]:
                    rec = _record(examples[i], method, rate, got["text"], got["seconds"], originals[i], counter,
                                  got.get("fallback"), shared_by=len(users[k]))
                    if method.runs_in == "peer-env":
                        rec["scorer"] = scorer  # which small LM scored this row's tokens
                    records.append(rec)
    finally:
        store.close()
    order = {(m.label, rate, e.id): n for n, (m, rate, e) in
             enumerate((m, rate, e) for m in methods for rate in rates for e in examples)}
    info_rates = {m.label: [r for r in rates if any(rec["method"] == m.label and rec["rate"] == r for rec in records)]
                  for m in methods}
    for label, rs in info_rates.items():
        info.setdefault(label, {})["rates"] = rs
    records.sort(key=lambda r: order[(r["method"], r["rate"], r["id"])])
    return records, info


# ---------------------------------------------------------------- evaluator and feedback

def _chunks(items: Sequence[Any], size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def run_evaluator(records: list[dict[str, Any]], examples: Sequence[Example], *, spec: str, gen_limit: int,
                  batch_size: int, qa_max_new_tokens: int, math_max_new_tokens: int, cache: bool, tqdm,
                  ll_limit: Optional[int] = None) -> dict[str, Any]:
    """Add generation (first ``gen_limit`` rows) and likelihood (first ``ll_limit`` rows, default all) figures."""
    from rlpc_core.evaluator import Evaluator, answers_match, build_prompt, parse_number, qa_em, qa_f1
    from rlpc_core.rewards import gold_target

    task = examples[0].task
    if task not in ("math", "qa"):
        return {"model": None, "requested": spec,
                "skipped": f"task {task!r} has no evaluator metrics here (latency, scaling and fidelity only)"}
    ev = Evaluator(spec, max_new_tokens=math_max_new_tokens if task == "math" else qa_max_new_tokens,
                   batch_size=batch_size, cache=cache)
    by_id = {e.id: e for e in examples}
    meaningful = [r for r in records if r["method"] not in _not_meaningful()]

    # -- generation on the sample: each distinct (text, question) once, originals included
    gen_ids = {e.id for e in examples[:gen_limit]}
    gen_records = [r for r in meaningful if r["id"] in gen_ids]
    jobs: dict[tuple[str, Optional[str]], None] = {}
    for e in examples[:gen_limit]:
        jobs[(e.text, e.question if task == "qa" else None)] = None
    for r in gen_records:
        jobs[(r["text"], by_id[r["id"]].question if task == "qa" else None)] = None
    keys = list(jobs)
    answers: dict[tuple[str, Optional[str]], Any] = {}
    t0 = time.perf_counter()
    if keys:
        with tqdm(total=len(keys), desc=f"evaluator answers ({spec})", unit="prompt", leave=False) as bar:
            for chunk in _chunks(keys, batch_size * 2):
                got = ev.answer(task, [k[0] for k in chunk], [k[1] for k in chunk] if task == "qa" else None)
                answers.update(zip(chunk, got))
                bar.update(len(chunk))
    gen_seconds = time.perf_counter() - t0
    for r in gen_records:
        e = by_id[r["id"]]
        q = e.question if task == "qa" else None
        orig, comp = answers[(e.text, q)], answers[(r["text"], q)]
        r["answer_original"], r["answer_compressed"] = orig.answer, comp.answer
        r["agree"] = bool(answers_match(task, comp.answer, orig.answer))
        if task == "math":
            gold = parse_number(e.answers[0])
            r["correct_original"] = bool(answers_match("math", orig.answer, gold))
            r["correct_compressed"] = bool(answers_match("math", comp.answer, gold))
        else:
            r["em_original"], r["em_compressed"] = qa_em(orig.answer or "", e.answers), qa_em(comp.answer or "", e.answers)
            r["f1_original"], r["f1_compressed"] = qa_f1(orig.answer or "", e.answers), qa_f1(comp.answer or "", e.answers)

    # -- likelihood of the reference answer on every row: originals once, each distinct compressed text once
    def target(e: Example) -> Optional[str]:
        # the same reference the answer_likelihood reward trains on (GSM8K: solution without calculator notes)
        if task == "math" and e.solution:
            return gold_target("math", e.solution)
        return gold_target("qa", list(e.answers))  # the first non-empty gold answer

    ll_examples = examples[:ll_limit] if ll_limit is not None else examples
    ll_ids = {e.id for e in ll_examples}
    ll_records = [r for r in meaningful if r["id"] in ll_ids]
    pairs: dict[tuple[str, str], None] = {}
    for e in ll_examples:
        t = target(e)
        if t:
            pairs[(build_prompt(task, e.text, e.question if task == "qa" else None), t)] = None
    for r in ll_records:
        e = by_id[r["id"]]
        t = target(e)
        if t:
            pairs[(build_prompt(task, r["text"], e.question if task == "qa" else None), t)] = None
    plist = list(pairs)
    ll: dict[tuple[str, str], float] = {}
    t0 = time.perf_counter()
    with tqdm(total=len(plist), desc="evaluator likelihood", unit="pair", leave=False) as bar:
        for chunk in _chunks(plist, batch_size * 4):
            ll.update(zip(chunk, ev.loglikelihood([p for p, _ in chunk], [t for _, t in chunk])))
            bar.update(len(chunk))
    ll_seconds = time.perf_counter() - t0
    for r in ll_records:
        e = by_id[r["id"]]
        t = target(e)
        if not t:
            continue
        q = e.question if task == "qa" else None
        r["ll_original"] = ll[(build_prompt(task, e.text, q), t)]
        r["ll_compressed"] = ll[(build_prompt(task, r["text"], q), t)]
        r["ll_delta"] = r["ll_compressed"] - r["ll_original"]
    return {"model": spec, "model_key": ev.model_key, "gen_rows": min(gen_limit, len(examples)),
            "likelihood_rows": len(ll_examples),
            "max_new_tokens": ev.max_new_tokens, "batch_size": batch_size, "distinct_generations": len(keys),
            "distinct_likelihoods": len(plist), "generation_seconds": gen_seconds, "likelihood_seconds": ll_seconds,
            "likelihood_target": "gold solution without <<calculator>> annotations" if task == "math" else "first gold answer"}


def run_feedback(records: list[dict[str, Any]], examples: Sequence[Example], *, spec: Optional[str], tqdm) -> dict[str, Any]:
    """Fidelity of every meaningful compressed record (``none`` excluded: it is the original itself)."""
    from rlpc_core.feedback import FeedbackModel

    fb = FeedbackModel(spec) if spec else FeedbackModel()
    by_id = {e.id: e for e in examples}
    todo = [r for r in records if r["method"] != NONE and r["method"] not in _not_meaningful()]
    t0 = time.perf_counter()
    with tqdm(total=len(todo), desc="fidelity", unit="row", leave=False) as bar:
        for chunk in _chunks(todo, 32):
            scorable = [r for r in chunk if r["text"].strip()]
            if scorable:
                scores = fb.score([by_id[r["id"]].text for r in scorable], [r["text"] for r in scorable])
                for r, s in zip(scorable, scores):
                    r["fidelity"] = float(s)
            for r in chunk:
                if not r["text"].strip():
                    r["fidelity"] = 0.0  # nothing left of the prompt
            bar.update(len(chunk))
    return {"name": fb.name, "kind": fb.kind, "seconds": time.perf_counter() - t0}


def run_calibration(records: Sequence[dict[str, Any]]) -> Optional[dict[str, Any]]:
    pairs = [(r["fidelity"], r["agree"]) for r in records
             if r["method"] != NONE and r.get("fidelity") is not None and r.get("agree") is not None]
    if not pairs:
        return None
    from rlpc_core.feedback import calibrate

    try:
        cal = calibrate([p[0] for p in pairs], [bool(p[1]) for p in pairs])
    except Exception as err:  # e.g. every pair agreed: nothing to separate
        return {"n": len(pairs), "error": f"{type(err).__name__}: {err}"}
    data = cal.to_dict() if hasattr(cal, "to_dict") else dict(vars(cal))
    data["agreed"] = sum(1 for p in pairs if p[1])
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in data.items()}


def _json_ready(obj: Any) -> Any:
    """NaN and infinities become None (JSON has no NaN); numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


# ---------------------------------------------------------------- aggregation

def fallback_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How many rows fell back to the graph policy, why (the reason before its first colon), and the ratio the
    requested policy achieved on the rows it answered itself (a rewriter's own compression, guards aside)."""
    reasons = Counter(r["fallback"].split(":")[0] for r in rows if r.get("fallback"))
    own = [r["ratio"] for r in rows if not r.get("fallback")]
    return {"fallbacks": sum(reasons.values()), "fallback_reasons": dict(reasons.most_common()),
            "ratio_without_fallback": float(np.mean(own)) if own else None}


def aggregate(records: Sequence[dict[str, Any]], methods: Sequence[Method], rates: Sequence[float],
              method_info: dict[str, dict[str, Any]], seed: int,
              reader_throughput: Optional[float] = None) -> list[dict[str, Any]]:
    from training.downstream import reader_aggregate

    out = []
    for m in methods:
        for rate in rates:
            rows = [r for r in records if r["method"] == m.label and r["rate"] == rate]
            if not rows:
                continue
            orig = sum(r["original_tokens"] for r in rows)
            comp = sum(r["compressed_tokens"] for r in rows)
            lat = [r["ms_per_1k"] for r in rows if r["ms_per_1k"] is not None]
            agg: dict[str, Any] = {
                "method": m.label, "rate": rate, "n": len(rows), "runs_in": m.runs_in, "quality_meaningful": m.meaningful,
                "ratio_mean": float(np.mean([r["ratio"] for r in rows])),
                "tokens_original": orig, "tokens_compressed": comp,
                "tokens_saved_share": (1 - comp / orig) if orig else 0.0,
                "tokens_saved_mean": float(np.mean([r["saved_tokens"] for r in rows])),
                "budget_met_share": float(np.mean([r["budget_met"] for r in rows])),
                "subsequence_share": float(np.mean([r["subsequence"] for r in rows])),
                **fallback_summary(rows),
                "number_retention": bootstrap_ci([r["number_retention"] for r in rows], seed),
                "all_numbers_kept": _mean([None if r["number_retention"] is None else float(r["number_retention"] == 1.0)
                                           for r in rows]),
                "answer_survival": bootstrap_ci([r["answer_survival"] for r in rows], seed),
                "likelihood_delta": bootstrap_ci([r.get("ll_delta") for r in rows], seed),
                "likelihood_original": _mean([r.get("ll_original") for r in rows]),
                "likelihood_compressed": _mean([r.get("ll_compressed") for r in rows]),
                "fidelity": bootstrap_ci([r.get("fidelity") for r in rows], seed),
                "latency_ms_per_1k": ({"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                                       "mean": float(np.mean(lat)), "n": len(lat)} if lat else None),
                "seconds_total": float(sum(r["seconds"] for r in rows if r["seconds"] is not None)),
                "peak_mb": method_info.get(m.label, {}).get("peak_mb"),
                "scorer": method_info.get(m.label, {}).get("scorer"),
            }
            reader = reader_aggregate(rows, seed=seed, throughput=reader_throughput) if m.meaningful else None
            if reader is not None:
                agg["reader"] = reader
            gen = [r for r in rows if r.get("agree") is not None]
            if gen:
                g: dict[str, Any] = {"n": len(gen), "agreement": _mean([float(r["agree"]) for r in gen])}
                if "correct_original" in gen[0]:
                    g["accuracy_original"] = _mean([float(r["correct_original"]) for r in gen])
                    g["accuracy_compressed"] = _mean([float(r["correct_compressed"]) for r in gen])
                else:
                    for k in ("em_original", "em_compressed", "f1_original", "f1_compressed"):
                        g[k] = _mean([r[k] for r in gen])
                agg["generation"] = g
            out.append(agg)
    return out


def scaling(records: Sequence[dict[str, Any]], methods: Sequence[Method]) -> dict[str, Any]:
    """Median ms per row per input-length bin and the log-log slope of time against tokens, per method."""
    out = {}
    for m in methods:
        rows = [r for r in records if r["method"] == m.label and r["seconds"] is not None and r["original_tokens"] > 0]
        if not rows:
            continue
        toks = np.asarray([r["original_tokens"] for r in rows], dtype=np.float64)
        ms = np.asarray([r["seconds"] * 1000 for r in rows], dtype=np.float64)
        medians = []
        for lo, hi in SCALING_BINS:
            sel = (toks >= lo) & (toks < (hi if hi is not None else np.inf))
            medians.append(float(np.median(ms[sel])) if sel.any() else None)
        exponent = None
        if toks.max() >= 2 * toks.min() and len(rows) >= 3 and (ms > 0).all():
            exponent = float(np.polyfit(np.log(toks), np.log(ms), 1)[0])
        out[m.label] = {"median_ms_by_bin": medians, "exponent": exponent}
    return out


def _bin_labels() -> list[dict[str, Any]]:
    labels = []
    for lo, hi in SCALING_BINS:
        labels.append({"lo": lo, "hi": hi, "label": f"{lo:,}–{hi:,}" if hi is not None else f"≥{lo:,}"})
    return labels


# ---------------------------------------------------------------- plots

def plot(metrics: dict[str, Any], records: Sequence[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = metrics["dataset"]["task"]
    aggs = metrics["aggregates"]
    files = []
    panels = []
    main_key = {"math": ("number_retention", "number retention"), "qa": ("answer_survival", "answer survival")}.get(task)
    if main_key:
        panels.append(main_key)
    if any(a.get("likelihood_delta") for a in aggs):
        panels.append(("likelihood_delta", "likelihood Δ (compressed − original)"))
    if any(a.get("fidelity") for a in aggs):
        panels.append(("fidelity", "fidelity"))
    if not panels:
        panels.append(("tokens_saved_share", "tokens saved (share)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    methods = list(dict.fromkeys(a["method"] for a in aggs))
    for ax, (key, label) in zip(axes[0], panels):
        for m in methods:
            pts = sorted((a for a in aggs if a["method"] == m and a.get("quality_meaningful", True)),
                         key=lambda a: a["ratio_mean"])
            xs, ys, lo, hi = [], [], [], []
            for a in pts:
                stat = a.get(key)
                if isinstance(stat, dict) and stat.get("mean") is not None:
                    xs.append(a["ratio_mean"]); ys.append(stat["mean"])
                    lo.append(stat["mean"] - stat["ci"][0]); hi.append(stat["ci"][1] - stat["mean"])
                elif isinstance(stat, (int, float)):
                    xs.append(a["ratio_mean"]); ys.append(stat); lo.append(0); hi.append(0)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=m)
        ax.set_xlabel("achieved ratio (compressed / original tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{metrics['dataset']['name']}: quality against achieved rate ({metrics['dataset']['rows']} rows)")
    fig.tight_layout()
    fig.savefig(out / "quality_vs_rate.png", dpi=110)
    plt.close(fig)
    files.append("quality_vs_rate.png")

    timed = [m for m in methods if any(r["method"] == m and r["ms_per_1k"] is not None for r in records)]
    if timed:
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(timed) + 2), 4.2))
        p50, p95 = [], []
        for m in timed:
            lat = [r["ms_per_1k"] for r in records if r["method"] == m and r["ms_per_1k"] is not None]
            p50.append(float(np.percentile(lat, 50))); p95.append(float(np.percentile(lat, 95)))
        ax.bar(timed, p50, color="tab:blue", label="p50")
        ax.errorbar(timed, p50, yerr=[[0] * len(timed), [b - a for a, b in zip(p50, p95)]], fmt="none", ecolor="black",
                    capsize=4, label="p95")
        ax.set_yscale("log")
        ax.set_ylabel("ms per 1k input tokens (log)")
        ax.set_title(f"{metrics['dataset']['name']}: compression latency, {metrics['config']['threads']} thread(s)")
        ax.legend()
        ax.grid(axis="y", alpha=0.3, which="both")
        plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        files.append("latency.png")

        fig, ax = plt.subplots(figsize=(6, 4.2))
        for m in timed:
            rows = [r for r in records if r["method"] == m and r["seconds"] is not None]
            ax.scatter([r["original_tokens"] for r in rows], [max(r["seconds"] * 1000, 1e-3) for r in rows], s=10,
                       label=m, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("input tokens (log)")
        ax.set_ylabel("ms per row (log)")
        ax.set_title("compression time against input length")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        fig.savefig(out / "latency_vs_length.png", dpi=110)
        plt.close(fig)
        files.append("latency_vs_length.png")
    return files


# ---------------------------------------------------------------- the run

def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for dist in ("rlpc", "torch", "transformers", "numpy", "sentence-transformers"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def _rates(text: str) -> list:
    from rlpc_core import check_rate

    rates: list = []
    for x in (x.strip() for x in text.split(",")):
        if not x:
            continue
        if x == AUTO:
            rates.append(AUTO)
            continue
        try:
            rates.append(check_rate(float(x)))
        except ValueError as err:
            raise ValueError(f"--rate {text!r} must be comma-separated fractions or auto, e.g. 0.33,0.5,auto") from err
    if not rates:
        raise ValueError("--rate needs at least one rate, e.g. 0.5")
    return rates


def _split(args: argparse.Namespace) -> Optional[str]:
    from training.data import NAMED

    if args.split or args.dataset not in NAMED:
        return args.split
    return NAMED[args.dataset]["default_split"]


def build_parser(prog: str = "python -m training.evaluate") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="gsm8k | squad | nq | qmsum | PATH.jsonl | hf:ORG/NAME[:CONFIG]")
    p.add_argument("--methods", default="graph,random,truncate,none",
                   help="comma-separated: rlpc policy names, checkpoint folders, the baselines random and truncate, "
                        "none, and any external method registered (python -m benchmarks.evaluate adds llmlingua, "
                        "longllmlingua, selective-context and llmlingua2-arch)")
    p.add_argument("--rate", default="0.5", help="target rate(s), comma-separated (default 0.5)")
    p.add_argument("--limit", type=int, default=None, help="first N rows after a seeded shuffle (default: all)")
    p.add_argument("--skip", type=int, default=0,
                   help="skip the first N rows of the seeded shuffle (with --development: the train rows a recipe with "
                        "data.limit N and the same seed did not read)")
    p.add_argument("--reader", default="default",
                   help="the reader LLM whose accuracy on the compressed prompts is the headline: llamacpp:ALIAS|FILE.gguf, "
                        "openai:BASE_URL#MODEL (your own server or API; key from --reader-api-key-env), serve:ALIAS|FILE.gguf "
                        "(start rlpc serve-reader for the run, stop it after), a transformers model, or 'none'; "
                        "default: llamacpp:qwen2.5-coder-1.5b-instruct where llama-cpp-python is installed and the "
                        "model pulled, else none")
    p.add_argument("--reader-n-ctx", type=int, default=4096, help="llama.cpp readers: context window (default 4096)")
    p.add_argument("--reader-threads", type=int, default=None,
                   help="llama.cpp readers: CPU threads (default: all cores)")
    p.add_argument("--reader-concurrency", type=int, default=4, help="server readers: requests in flight (default 4)")
    p.add_argument("--reader-api-key-env", default="OPENAI_API_KEY",
                   help="server readers: environment variable holding the API key (default OPENAI_API_KEY)")
    p.add_argument("--reader-timeout", type=float, default=300.0, help="server readers: seconds per request (default 300)")
    p.add_argument("--peer-scorer", default="smollm2-135m-instruct",
                   choices=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"],
                   help="the small LM that LLMLingua and LongLLMLingua score tokens with (default smollm2-135m-instruct; "
                        "the 0.5B is ~4x slower and fairer to them)")
    p.add_argument("--resume", action="store_true",
                   help="reuse the compressions already in OUT/compressions.jsonl (a stopped run restarts where it "
                        "stopped); reader answers always come from the reader's cache where they exist, and from "
                        f"OUT/{READER_JOURNAL}, which keeps every reply of the run (copy or commit OUT to continue on "
                        "another machine)")
    p.add_argument("--evaluator", default="smollm2-135m-instruct",
                   help="the small evaluator's likelihood and agreement columns (embedded alias, folder, hub id) or "
                        "'none' (default smollm2-135m-instruct); cheap companions, not the verdict: see --reader")
    p.add_argument("--gen-limit", type=int, default=24,
                   help="generation-based metrics on the first M rows only (a labelled sample; default 24)")
    p.add_argument("--ll-limit", type=int, default=None,
                   help="answer-likelihood on the first N rows only (default: every row); one forward pass per "
                        "distinct text, so this bounds the evaluator's cost on long runs")
    p.add_argument("--feedback", default=None,
                   help="feedback model spec, or 'none' (default: rlpc's default cross-encoder, falling back to the "
                        "embedded MiniLM bi-encoder where it cannot be had)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for every method, peers included (default 1: on a shared 2-core machine, 2 "
                        "threads stall whenever another process holds a core, and latencies jump 10-20x)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--data-dir", type=Path, default=None, help="folder of the named datasets (default ../shared/data)")
    p.add_argument("--split", default=None, help="dataset split (gsm8k: test by default)")
    p.add_argument("--tokenizer", default=None, help="token counter for every method (default: the Compressor's)")
    p.add_argument("--text-field", default=None, help="custom JSONL: field holding the text to compress")
    p.add_argument("--question-field", default=None, help="custom JSONL: field holding the question")
    p.add_argument("--answer-field", default=None, help="custom JSONL: field holding the gold answer(s)")
    p.add_argument("--task", default=None, choices=["math", "qa", "summary", "math-fewshot", "mc"],
                   help="custom JSONL: the task")
    p.add_argument("--batch-size", type=int, default=4, help="evaluator batch size (default 4)")
    p.add_argument("--qa-max-new-tokens", type=int, default=24)
    p.add_argument("--math-max-new-tokens", type=int, default=256,
                   help="generation budget for math answers (a chain of thought), default 256")
    p.add_argument("--no-eval-cache", action="store_true", help="do not use the evaluator's disk cache")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--development", action="store_true",
                   help="allow --split train, to tune heuristics on training rows; the report says it is not a result")
    p.set_defaults(prog=prog)  # the command recorded in metrics.json
    return p


def reader_spec(args: argparse.Namespace) -> Optional[str]:
    from training.downstream import default_reader

    spec = args.reader
    if spec == "default":
        return default_reader()
    return None if spec.lower() == NONE else spec


def run_downstream(args: argparse.Namespace, records: list[dict[str, Any]], examples: Sequence[Example],
                   tqdm) -> Optional[dict[str, Any]]:
    """The reader's answers on every record (``--reader``); a ``serve:`` reader runs in a server for this call."""
    from training.downstream import run_reader

    spec = reader_spec(args)
    if spec is None:
        return {"spec": None, "skipped": "no reader (--reader none, or the default reader is not installed: "
                                         "pip install 'rlpc[reader]' and rlpc models pull qwen2.5-coder-1.5b-instruct)"}
    max_new = {"qa": args.qa_max_new_tokens, "mc": args.qa_max_new_tokens, "math": args.math_max_new_tokens,
               "math-fewshot": args.math_max_new_tokens}
    skip = sorted(_not_meaningful())
    journal = args.out / READER_JOURNAL  # the replies travel with the results: a run continues on any machine
    if spec.startswith("serve:"):
        from rlpc_core.reader_server import ReaderServer

        with ReaderServer(spec[len("serve:"):], n_ctx=args.reader_n_ctx, threads=args.reader_threads,
                          log_path=args.out / "reader-server.log") as server:
            info = run_reader(records, examples, spec=server.spec, max_new_tokens=max_new, tqdm=tqdm,
                              options=_server_options(args), skip_methods=skip, journal=journal)
        info["served"] = spec
        return info
    if spec.startswith("llamacpp:"):
        options = {"n_ctx": args.reader_n_ctx, "threads": args.reader_threads}
    elif spec.startswith("openai:"):
        options = _server_options(args)
    else:
        options = {}
    return run_reader(records, examples, spec=spec, max_new_tokens=max_new, tqdm=tqdm, options=options,
                      skip_methods=skip, journal=journal)


def _server_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"concurrency": args.reader_concurrency, "api_key_env": args.reader_api_key_env,
            "timeout": args.reader_timeout}


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from tqdm import tqdm as _tqdm

    from rlpc_core import CompressorConfig

    def tqdm(*a: Any, **k: Any):
        return _tqdm(*a, disable=args.quiet, file=sys.stderr, dynamic_ncols=True, **k)

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    tokenizer = args.tokenizer or CompressorConfig().tokenizer
    if args.split == "train" and not args.development:
        raise ValueError("--split train: benchmarks report on rows no compressor was trained on; use --split test "
                         "(gsm8k, nq) or --split heldout (the squad and nq partitions that training never reads); "
                         "to tune a heuristic on training rows, pass --development (its output is not a result)")
    rates = _rates(args.rate)
    register_baselines(seed=args.seed)
    methods = resolve_methods([m.strip() for m in args.methods.split(",") if m.strip()])
    oracles = [m.label for m in methods if m.spec.endswith(ORACLE)]
    if oracles and not args.development:
        raise ValueError(f"--methods {','.join(oracles)}: a guide that knows the gold answers is a diagnostic, not a "
                         "result; run it on training rows with --split train --development")
    examples = load(args.dataset, data_dir=args.data_dir, split=args.split, seed=args.seed,
                    limit=None if args.skip else args.limit, text_field=args.text_field,
                    question_field=args.question_field, answer_field=args.answer_field, task=args.task)
    if args.skip:
        examples = examples[args.skip:][:args.limit]
        if not examples:
            raise ValueError(f"--skip {args.skip} leaves no rows of {args.dataset!r}; skip fewer rows")
    task = examples[0].task
    for m in methods:  # build (or check) what external methods need now: a failure must not come late
        if m.runs_in == "peer-env":
            EXTERNAL[m.spec].prepare(args.quiet)
        elif m.runs_in == "in-process":
            check_guide(m, _make_compressor(m, tokenizer))
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    with tqdm(total=len(methods) * len(rates) * len(examples), desc="compress", unit="row") as bar:
        records, method_info = compress_all(methods, examples, rates, tokenizer=tokenizer, threads=args.threads,
                                            out=out, bar=bar, resume=args.resume, scorer=args.peer_scorer)
    reader_info = run_downstream(args, records, examples, tqdm)
    evaluator_info: dict[str, Any] = {"model": None}
    if args.evaluator.lower() != NONE:
        evaluator_info = run_evaluator(records, examples, spec=args.evaluator, gen_limit=args.gen_limit, ll_limit=args.ll_limit,
                                       batch_size=args.batch_size, qa_max_new_tokens=args.qa_max_new_tokens,
                                       math_max_new_tokens=args.math_max_new_tokens, cache=not args.no_eval_cache,
                                       tqdm=tqdm)
    feedback_info: dict[str, Any] = {}
    if (args.feedback or "").lower() != NONE:
        feedback_info = run_feedback(records, examples, spec=args.feedback, tqdm=tqdm)
    calibration = run_calibration(records)

    metrics: dict[str, Any] = {
        "format": "rlpc-benchmark/1",
        "development": bool(args.development),  # True: measured on training rows to tune; not a result
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": {"command": f"{args.prog} " + " ".join(shlex.quote(a) for a in argv),
                   "dataset": args.dataset, "split": args.split, "methods": [m.label for m in methods],
                   "method_specs": {m.label: m.spec for m in methods}, "rates": rates, "limit": args.limit, "skip": args.skip,
                   "gen_limit": args.gen_limit, "ll_limit": args.ll_limit, "tokenizer": tokenizer, "threads": args.threads, "seed": args.seed,
                   "bootstrap_resamples": BOOTSTRAP},
        "seed": args.seed,
        "versions": _versions(),
        "dataset": {"name": args.dataset, "split": _split(args), "task": task, "rows": len(examples),
                    "ids": [e.id for e in examples],
                    "mean_original_tokens": float(np.mean([r["original_tokens"] for r in records[: len(examples)]]))},
        "evaluator": evaluator_info,
        "feedback": feedback_info,
        "calibration": calibration,
        "methods": {m.label: {"spec": m.spec, "runs_in": m.runs_in, "quality_meaningful": m.meaningful,
                              **method_info.get(m.label, {})} for m in methods},
        "peer_env": {m.label: {**{k: method_info[m.label].get(k) for k in ("versions", "load_seconds", "worker_max_rss_mb")},
                               "note": (EXTERNAL[m.spec].note if not m.meaningful else
                                        f"{EXTERNAL[m.spec].note}, scorer: {method_info[m.label].get('scorer')}")}
                     for m in methods if m.runs_in == "peer-env"},
        "reader": reader_info,
        "aggregates": aggregate(records, methods, rates, method_info, args.seed,
                                reader_throughput=(reader_info or {}).get("prefill_tokens_per_second")),
        "scaling": scaling(records, methods),
        "scaling_bins": _bin_labels(),
        "rows_file": "rows.jsonl",
    }
    with (out / "rows.jsonl").open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(_json_ready(r), ensure_ascii=False) + "\n")
    from training.downstream import plot_reader

    metrics["plots"] = plot(metrics, records, out) + plot_reader(metrics, out)
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics = _json_ready(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    from training.report import render_report

    (out / "report.md").write_text(render_report(metrics), encoding="utf-8")
    return metrics


def main(argv: Optional[Sequence[str]] = None, *, prog: str = "python -m training.evaluate") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit {args.limit} must be at least 1")
    if args.skip < 0:
        parser.error(f"--skip {args.skip} must be 0 or more")
    if args.ll_limit is not None and args.ll_limit < 1:
        parser.error(f"--ll-limit {args.ll_limit} must be 1 or more (omit it for every row)")
    if args.gen_limit < 0:
        parser.error(f"--gen-limit {args.gen_limit} must be 0 or more")
    if args.threads < 1:
        parser.error(f"--threads {args.threads} must be at least 1")
    try:
        metrics = run(args, argv)
    except (DataError, ValueError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    except (MethodUnavailable, ReaderError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out / 'metrics.json'}, {args.out / 'report.md'}, {args.out / 'rows.jsonl'} and "
          f"{', '.join(metrics['plots'])} in {metrics['wall_seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
