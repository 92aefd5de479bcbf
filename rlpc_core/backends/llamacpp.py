"""llama.cpp in this process as a reader (``pip install 'rlpc[reader]'``): a GGUF, its own chat template, greedy.

    Evaluator("llamacpp:qwen2.5-coder-1.5b-instruct")      # an embedded alias (pulled and sha256-verified once)
    Evaluator("llamacpp:/models/my-model.Q4_K_M.gguf")      # any GGUF file (keyed by its sha256)

Why in-process: on 2 CPU cores llama.cpp runs a Q4_K_M 1.5B model 5-10x faster than transformers in fp32, and
teacher-forced likelihoods need the logits of only the target's positions, which the low-level batch API gives
without computing the vocabulary projection for every prompt token.

* Prompts are rendered with the GGUF's chat template (:mod:`rlpc_core.chat_template`, the same rendering the
  OpenAI-compatible client uses) and tokenized the way llama-cpp-python's chat endpoint does, so a reply here is
  the reply ``rlpc serve-reader`` gives for the same message.
* Prefill and decoding are timed apart; with ``prefix_cache`` (default on) the KV cache of the previous prompt's
  common prefix is reused, as llama.cpp's server does, and :attr:`Reply.reused_tokens` says how many tokens were
  not prefilled (so cost accounting can add them back).
* One model instance per (file, n_ctx, threads) in a process, guarded by a lock: llama.cpp contexts are not
  thread-safe.
"""

from __future__ import annotations

import atexit
import importlib.util
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from ..models import EMBEDDED, ModelError, gguf_path, sha256_file
from . import ReaderError, Reply

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
INSTALL_HINT = ("llamacpp: readers need llama-cpp-python: pip install 'rlpc[reader]' (it builds llama.cpp from source "
                "once, ~5-10 min on 2 cores; pip caches the wheel)")


def available() -> bool:
    """Whether llama-cpp-python is installed (checked without importing it: the import loads the shared library)."""
    return importlib.util.find_spec("llama_cpp") is not None


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


_HASHES: dict[tuple[str, int, int], str] = {}


def resolve_gguf(target: str) -> tuple[Callable[[], Path], str, str]:
    """``(path getter, identity, label)`` for an embedded alias or a GGUF file path.

    An alias is identified by its pinned sha256 without touching the file (it is pulled on first use); a file by
    the sha256 of its bytes, so a cache entry can never be reused for other weights under the same name.
    """
    if not isinstance(target, str) or not target.strip():
        raise ValueError("reader 'llamacpp:' names no model: append an embedded alias (e.g. "
                         "llamacpp:qwen2.5-coder-1.5b-instruct) or the path of a .gguf file")
    target = target.strip()
    if target in EMBEDDED:
        m = EMBEDDED[target]
        if "gguf" not in m.formats:
            raise ModelError(f"embedded model {target!r} has no GGUF; llama.cpp readers can use "
                             f"{', '.join(a for a, e in EMBEDDED.items() if 'gguf' in e.formats)} or a .gguf file")
        return (lambda: gguf_path(target)), f"llamacpp:{target}@{m.sha256}", target
    path = Path(target).expanduser()
    if not path.is_file():
        close = [a for a, e in EMBEDDED.items() if "gguf" in e.formats]
        raise ModelError(f"llamacpp:{target}: no such file, and not an embedded alias; pass a .gguf file or one of "
                         f"{', '.join(close)}")
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise ModelError(f"{path} is not a GGUF file (it does not start with 'GGUF'); llama.cpp readers load GGUF "
                             "weights: convert the model with llama.cpp's convert_hf_to_gguf.py or pass a .gguf file")
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    resolved = path.resolve()
    return (lambda: resolved), f"llamacpp:sha256={_HASHES[key]}", path.name


# ---------------------------------------------------------------- shared model instances

_MODELS: dict[tuple[str, int, int], tuple[Any, threading.Lock]] = {}
_MODELS_LOCK = threading.Lock()


@atexit.register
def _close_models() -> None:
    # Closed before interpreter teardown: llama-cpp-python's own __del__ runs too late at exit (its C bindings are
    # already gone) and prints a TypeError per model.
    with _MODELS_LOCK:
        for llm, _ in _MODELS.values():
            try:
                llm.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
        _MODELS.clear()


def load_llama(path: Path, *, n_ctx: int, threads: int) -> tuple[Any, threading.Lock]:
    """One ``llama_cpp.Llama`` per (file, n_ctx, threads) in this process, with the lock that guards it."""
    key = (str(path), n_ctx, threads)
    with _MODELS_LOCK:
        if key not in _MODELS:
            if not available():
                raise ModelError(INSTALL_HINT)
            from llama_cpp import Llama

            # logits_all=False: likelihoods ask for the logits they need per position (token_logprobs), so no
            # n_ctx x vocabulary buffer (2.5 GB for Qwen's 152k vocabulary) is kept or copied.
            llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                        logits_all=False, verbose=False, seed=0)
            _MODELS[key] = (llm, threading.Lock())
        return _MODELS[key]


def chat_renderer_for(llm: Any) -> tuple[str, Callable[[str], str]]:
    """The GGUF's chat template as ``(identity, render)``; plain text when the file carries none."""
    from ..chat_template import plain_renderer, renderer

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        log.warning("the GGUF carries no chat template; the reader sends prompts as plain text")
        return "plain", plain_renderer()
    return renderer(template, bos_token=_token_text(llm, llm.token_bos()), eos_token=_token_text(llm, llm.token_eos()))


def _token_text(llm: Any, token: int) -> str:
    return "" if token is None or token < 0 else llm._model.token_get_text(token)


def chat_tokens(llm: Any, rendered: str) -> list[int]:
    # As llama-cpp-python's chat endpoint does: the template already holds any BOS, special tokens are parsed.
    return llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)


def _common_prefix(llm: Any, tokens: Sequence[int]) -> int:
    cached = llm.input_ids[: llm.n_tokens]
    n = min(len(cached), len(tokens))
    if n == 0:
        return 0
    diff = np.nonzero(np.asarray(cached[:n]) != np.asarray(tokens[:n], dtype=cached.dtype))[0]
    return int(diff[0]) if diff.size else n


def _check_fits(llm: Any, n: int, what: str) -> None:
    if n > llm.n_ctx():
        raise ReaderError(f"{what} needs {n} tokens but the llama.cpp reader's context holds n_ctx={llm.n_ctx()}; "
                          f"pass n_ctx={2 ** math.ceil(math.log2(n))} to the evaluator, or send shorter prompts")


def _prefill(llm: Any, tokens: Sequence[int], reuse: bool) -> int:
    """Evaluate ``tokens`` into the KV cache, reusing the cached common prefix; returns the tokens reused."""
    keep = min(_common_prefix(llm, tokens), len(tokens) - 1) if reuse else 0
    llm.n_tokens = keep  # eval() drops the KV cache beyond n_tokens before decoding the rest
    llm.eval(tokens[keep:])
    return keep


def token_logprobs(llm: Any, tokens: Sequence[int], start: int, *, reuse: bool = True) -> list[float]:
    """``log p(tokens[i] | tokens[:i])`` for ``start <= i < len(tokens)`` (``start >= 1``), teacher-forced.

    Logits are requested only for positions ``start - 1 .. len - 2``: the prompt before them is prefilled
    without the vocabulary projection. The KV cache's common prefix with the previous call is reused.
    """
    n = len(tokens)
    if not 1 <= start < n + 1:
        raise ValueError(f"start={start} must be in [1, {n}]: the first token has nothing to be predicted from")
    _check_fits(llm, n, "scoring this prompt and target")
    keep = min(_common_prefix(llm, tokens), start - 1) if reuse else 0
    llm.n_tokens = keep
    llm._ctx.kv_cache_seq_rm(-1, keep, -1)
    n_vocab = llm.n_vocab()
    out: list[float] = []
    pos = keep
    while pos < n:
        chunk = list(tokens[pos : pos + llm.n_batch])
        batch = llm._batch
        batch.set_batch(batch=chunk, n_past=pos, logits_all=False)  # logits flag on the last token only
        wanted = [j for j in range(len(chunk)) if start - 1 <= pos + j < n - 1]
        for j in wanted:
            batch.batch.logits[j] = True
        llm._ctx.decode(batch)
        for j in wanted:
            row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(j), shape=(n_vocab,)).astype(np.float64)
            top = row.max()
            lse = top + math.log(float(np.exp(row - top).sum()))
            out.append(float(row[tokens[pos + j + 1]] - lse))
        llm.input_ids[pos : pos + len(chunk)] = chunk
        llm.n_tokens = pos + len(chunk)
        pos += len(chunk)
    llm._requires_eval = False  # the last token's logits come from this live decode
    return out


def runner_up_replies(llm: Any, tokens: Sequence[int], *, k: int, max_new_tokens: int, stop: Sequence[str] = (),
                      reuse: bool = True) -> list[tuple[str, float]]:
    """The ``k`` replies to ``tokens`` (a rendered prompt) that begin with the next most likely first tokens after
    the greedy one, each continued greedily: ``(text, log-probability of its first token)``, most likely first. The
    caller holds the model's lock; the prompt's KV cache is reused from the greedy reply's when it came just before."""
    tokens = list(tokens)
    _check_fits(llm, len(tokens) + max_new_tokens, f"a prompt of {len(tokens)} tokens plus {max_new_tokens} new")
    _prefill(llm, tokens, reuse)
    row = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).astype(np.float64)
    logprobs = row - (row.max() + math.log(float(np.exp(row - row.max()).sum())))
    out = []
    for first in np.argsort(-logprobs)[1 : k + 1]:  # [0] is the greedy reply's own first token
        # the prompt plus the forced first token: its KV cache is the prompt's, reused
        got = llm.create_completion(tokens + [int(first)], max_tokens=max_new_tokens, temperature=0.0, top_k=1,
                                    top_p=1.0, min_p=0.0, repeat_penalty=1.0, stop=list(stop) or None, seed=0)
        head = llm.detokenize([int(first)]).decode("utf-8", errors="ignore")
        out.append(((head + got["choices"][0]["text"]).strip(), float(logprobs[first])))
    return out


# ---------------------------------------------------------------- the backend

class LlamaCppBackend:
    """A GGUF under llama.cpp in this process."""

    def __init__(self, target: str, *, n_ctx: int = 4096, threads: Optional[int] = None, prefix_cache: bool = True):
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 256:
            raise ValueError(f"n_ctx={n_ctx!r} must be an integer >= 256 (tokens of prompt plus reply), e.g. 4096")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads={threads!r} must be a positive integer or None (all cores)")
        if not isinstance(prefix_cache, bool):
            raise ValueError(f"prefix_cache={prefix_cache!r} must be True or False")
        if not available():
            raise ModelError(INSTALL_HINT)
        self._path, self.identity, self.label = resolve_gguf(target)
        self.n_ctx, self.threads, self.prefix_cache = n_ctx, threads or default_threads(), prefix_cache
        self.description = f"llama.cpp {self.label} (n_ctx {self.n_ctx}, {self.threads} threads)"
        self._render: Optional[Callable[[str], str]] = None

    def _load(self) -> tuple[Any, threading.Lock, Callable[[str], str]]:
        llm, lock = load_llama(self._path(), n_ctx=self.n_ctx, threads=self.threads)
        if self._render is None:
            self._render = chat_renderer_for(llm)[1]
        return llm, lock, self._render

    def render(self, prompt: str) -> str:
        return self._load()[2](prompt)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int,
                 stop: Sequence[str] = ()) -> Iterator[tuple[int, Reply]]:
        llm, lock, render = self._load()
        for i, prompt in enumerate(prompts):
            with lock:
                reply = self._generate_one(llm, render(prompt), max_new_tokens, stop)
            yield i, reply

    def _generate_one(self, llm: Any, rendered: str, max_new_tokens: int, stop: Sequence[str]) -> Reply:
        tokens = chat_tokens(llm, rendered)
        _check_fits(llm, len(tokens) + max_new_tokens, f"a prompt of {len(tokens)} tokens plus {max_new_tokens} new")
        t0 = time.perf_counter()
        reused = _prefill(llm, tokens, self.prefix_cache)
        t1 = time.perf_counter()
        # The whole prompt is in the KV cache now, so create_completion samples at once (no second prefill).
        out = llm.create_completion(tokens, max_tokens=max_new_tokens, temperature=0.0, top_k=1, top_p=1.0,
                                    min_p=0.0, repeat_penalty=1.0, stop=list(stop) or None, seed=0)
        t2 = time.perf_counter()
        choice = out["choices"][0]
        return Reply(text=choice["text"].strip(), prompt_tokens=len(tokens),
                     completion_tokens=int(out["usage"]["completion_tokens"]), reused_tokens=reused,
                     prefill_seconds=t1 - t0, generation_seconds=t2 - t1, seconds=t2 - t0,
                     finish_reason=choice.get("finish_reason"))

    def runner_ups(self, prompts: Sequence[str], *, k: int, max_new_tokens: int,
                   stop: Sequence[str] = ()) -> Iterator[tuple[int, list[tuple[str, float]]]]:
        llm, lock, render = self._load()
        for i, prompt in enumerate(prompts):
            with lock:
                out = runner_up_replies(llm, chat_tokens(llm, render(prompt)), k=k, max_new_tokens=max_new_tokens,
                                        stop=stop, reuse=self.prefix_cache)
            yield i, out

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[int, float]]:
        llm, lock, render = self._load()
        for i, (prompt, target) in enumerate(pairs):
            with lock:
                prefix = chat_tokens(llm, render(prompt))
                tail = llm.tokenize(target.encode("utf-8"), add_bos=False, special=False)
                if not tail:
                    raise ValueError(f"target {target!r} has no tokens: a likelihood needs at least one")
                values = token_logprobs(llm, prefix + tail, len(prefix), reuse=self.prefix_cache)
            yield i, sum(values) / len(values)


__all__ = ["INSTALL_HINT", "LlamaCppBackend", "available", "chat_renderer_for", "chat_tokens", "default_threads",
           "load_llama", "resolve_gguf", "runner_up_replies", "token_logprobs"]
