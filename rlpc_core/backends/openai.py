"""Any OpenAI-compatible server as a reader: llama.cpp's server, vLLM, Ollama, OpenAI itself.

    Evaluator("openai:http://127.0.0.1:8080/v1#qwen2.5-coder-1.5b-instruct")

* generation: ``POST {base_url}/chat/completions``, greedy (``temperature=0``, fixed seed), ``concurrency``
  requests in flight from a bounded thread pool;
* likelihood: ``POST {base_url}/completions`` with ``echo=true, logprobs=0, max_tokens=1`` on the chat-rendered
  prompt followed by the target, reading the target's prompt log-probabilities back (llama.cpp's server started
  by ``rlpc serve-reader`` and vLLM give them). The chat template comes from the server's ``/props`` (llama.cpp
  servers publish it there), or from ``chat_template=PATH.jinja``, or ``chat_template="none"`` for plain text.
  A server that cannot give prompt log-probabilities raises :class:`ReaderCapabilityError`, never a silent zero;
* the API key is read from the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``) at each request:
  it is never stored on the object, logged, or part of a cache key;
* every request has a timeout; 429 and 5xx answers and dropped connections are retried with exponential backoff
  (honouring ``Retry-After``); a server that stays unreachable raises :class:`ReaderUnavailable` naming the URL.

Only the standard library is used (``urllib``), so this backend adds no dependency.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from . import ReaderCapabilityError, ReaderError, ReaderUnavailable, Reply

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
#: Seconds of the first backoff; doubled each retry, capped, with jitter so parallel clients do not stampede.
BACKOFF_BASE, BACKOFF_CAP = 0.5, 20.0


def parse_target(target: str) -> tuple[str, str]:
    """``http://host:port/v1#model`` -> (base URL without a trailing slash, model name)."""
    url, sep, model = target.partition("#")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"reader 'openai:{target}' needs a base URL like http://127.0.0.1:8080/v1, then '#' and the "
                         "model name: e.g. openai:http://127.0.0.1:8080/v1#qwen2.5-coder-1.5b-instruct")
    if not sep or not model.strip():
        raise ValueError(f"reader 'openai:{target}' names no model: append '#' and the model name the server "
                         f"serves, e.g. openai:{url}#qwen2.5-coder-1.5b-instruct (GET {url.rstrip('/')}/models lists them)")
    return url.rstrip("/"), model.strip()


def _positive(name: str, value: Any, kind: type = int) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive {'number' if kind is float else 'integer'}, e.g. "
                         f"{name}={'60' if kind is float else '4'}")
    return value


class OpenAIBackend:
    """A reader behind an OpenAI-compatible HTTP API."""

    def __init__(self, target: str, *, concurrency: int = 4, timeout: float = 300.0, retries: int = 4,
                 api_key_env: str = "OPENAI_API_KEY", chat_template: str = "auto"):
        self.base_url, self.model = parse_target(target)
        self.concurrency = _positive("concurrency", concurrency)
        self.timeout = float(_positive("timeout", timeout, float))
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries={retries!r} must be an integer >= 0, e.g. retries=4")
        self.retries = retries
        if not isinstance(api_key_env, str) or not api_key_env:
            raise ValueError(f"api_key_env={api_key_env!r} must name an environment variable, e.g. 'OPENAI_API_KEY'")
        self.api_key_env = api_key_env
        if chat_template not in ("auto", "none") and not Path(chat_template).expanduser().is_file():
            raise ValueError(f"chat_template={chat_template!r} must be 'auto' (ask the server's /props), 'none' (plain "
                             "text) or the path of a Jinja chat-template file")
        self.chat_template_source = chat_template
        self.description = f"OpenAI-compatible server {self.base_url}, model {self.model}"
        self._template: Optional[tuple[str, Callable[[str], str]]] = None
        self._props: Optional[dict[str, Any]] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the key
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, concurrency={self.concurrency})"

    # -- HTTP with retries
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _request(self, method: str, url: str, payload: Optional[dict[str, Any]] = None) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload, ensure_ascii=False).encode("utf-8")
        last = ""
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=data, headers=self._headers(), method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                body = err.read().decode("utf-8", "replace")[:400].strip()
                if err.code in RETRY_STATUS and attempt < self.retries:
                    self._sleep(attempt, err.headers.get("Retry-After"))
                    last = f"HTTP {err.code}"
                    continue
                if err.code in (401, 403):
                    raise ReaderError(f"the reader at {self.base_url} refused the request (HTTP {err.code}: {body}); "
                                      f"set the API key in the environment variable {self.api_key_env}") from None
                raise _HTTPStatus(url, err.code, body) from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout,
                    TimeoutError) as err:
                reason = getattr(err, "reason", None) or err
                last = f"{type(reason).__name__}: {reason}" if not isinstance(reason, str) else reason
                if attempt < self.retries:
                    self._sleep(attempt, None)
                    continue
            except json.JSONDecodeError as err:
                raise ReaderError(f"the reader at {url} answered something that is not JSON ({err}); is "
                                  f"{self.base_url} an OpenAI-compatible API (it usually ends in /v1)?") from None
        raise ReaderUnavailable(
            f"cannot reach the reader at {self.base_url} ({last}) after {self.retries + 1} attempts; start the server "
            f"(e.g. `rlpc serve-reader qwen2.5-coder-1.5b-instruct --port 8080`) or fix the URL. Every answer computed "
            f"before this is kept in the evaluator's cache")

    @staticmethod
    def _sleep(attempt: int, retry_after: Optional[str]) -> None:
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt) * (0.5 + random.random() / 2)
        if retry_after:
            try:
                delay = min(BACKOFF_CAP * 3, max(delay, float(retry_after)))
            except ValueError:
                pass
        time.sleep(delay)

    def _pool(self, n: int, work: Callable[[int], Any]) -> Iterator[tuple[int, Any]]:
        """``work(i)`` for i < n with at most ``concurrency`` in flight; results as they complete. On the first
        error nothing new starts, the requests in flight finish (and are yielded), then the error is raised."""
        pending: dict[Future, int] = {}
        next_i, error = 0, None
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="rlpc-reader") as pool:
            while pending or (next_i < n and error is None):
                while error is None and next_i < n and len(pending) < self.concurrency:
                    pending[pool.submit(work, next_i)] = next_i
                    next_i += 1
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    try:
                        value = fut.result()
                    except BaseException as err:  # noqa: BLE001 - re-raised below, after the others finished
                        error = error or err
                        continue
                    yield i, value
        if error is not None:
            raise error

    # -- generation
    def generate(self, prompts: Sequence[str], *, max_new_tokens: int,
                 stop: Sequence[str] = ()) -> Iterator[tuple[int, Reply]]:
        def one(i: int) -> Reply:
            payload: dict[str, Any] = {"model": self.model, "messages": [{"role": "user", "content": prompts[i]}],
                                       "max_tokens": max_new_tokens, "temperature": 0.0, "seed": 0}
            if stop:
                payload["stop"] = list(stop)[:4]  # OpenAI accepts at most four
            t0 = time.perf_counter()
            out = self._request("POST", f"{self.base_url}/chat/completions", payload)
            seconds = time.perf_counter() - t0
            try:
                choice = out["choices"][0]
                text = choice["message"].get("content") or ""
            except (KeyError, IndexError, TypeError, AttributeError):
                raise ReaderError(f"the reader at {self.base_url} answered without choices[0].message: "
                                  f"{json.dumps(out)[:300]}") from None
            usage = out.get("usage") or {}
            timings = out.get("timings") or {}  # llama.cpp's C++ server reports these; others do not
            prefill = timings.get("prompt_ms")
            gen = timings.get("predicted_ms")
            return Reply(text=text.strip(), prompt_tokens=usage.get("prompt_tokens"),
                         completion_tokens=usage.get("completion_tokens"),
                         reused_tokens=int(timings.get("cache_n") or 0),
                         prefill_seconds=None if prefill is None else prefill / 1000,
                         generation_seconds=None if gen is None else gen / 1000, seconds=seconds,
                         finish_reason=choice.get("finish_reason"))

        return self._pool(len(prompts), one)

    def _post_or_incapable(self, url: str, payload: dict[str, Any], explain: Callable[["_HTTPStatus"], str]) -> Any:
        """POST ``payload``; a refusal (HTTP 4xx/5xx after retries) means the server cannot do it: a capability
        error saying ``explain(refusal)``, not a reader failure."""
        try:
            return self._request("POST", url, payload)
        except _HTTPStatus as err:
            raise ReaderCapabilityError(explain(err)) from None

    def runner_ups(self, prompts: Sequence[str], *, k: int, max_new_tokens: int,
                   stop: Sequence[str] = ()) -> Iterator[tuple[int, list[tuple[str, float]]]]:
        """A guide's second guesses from ``rlpc serve-reader`` (``POST /rlpc/runner_ups``): a chat endpoint cannot
        force a reply's first token. Other servers raise :class:`ReaderCapabilityError`."""
        def one(i: int) -> list[tuple[str, float]]:
            payload = {"model": self.model, "prompt": prompts[i], "k": k, "max_tokens": max_new_tokens,
                       "stop": list(stop)}
            out = self._post_or_incapable(
                f"{self._root()}/rlpc/runner_ups", payload,
                lambda err: f"the reader at {self.base_url} gives no runner-up replies (POST /rlpc/runner_ups answered "
                            f"HTTP {err.status}); serve it with `rlpc serve-reader`, or use an in-process reader "
                            "(llamacpp:...)")
            try:
                return [(str(text), float(logprob)) for text, logprob in out["runner_ups"]]
            except (KeyError, TypeError, ValueError):
                raise ReaderError(f"the reader at {self.base_url} answered /rlpc/runner_ups without a list of "
                                  f"[text, logprob] pairs: {json.dumps(out)[:200]}") from None

        return self._pool(len(prompts), one)

    # -- what the server says about itself
    def _root(self) -> str:
        parsed = urllib.parse.urlparse(self.base_url)
        path = parsed.path[:-3] if parsed.path.endswith("/v1") else parsed.path
        return urllib.parse.urlunparse(parsed._replace(path=path.rstrip("/")))

    def props(self) -> dict[str, Any]:
        """The server's ``GET /props`` (llama.cpp servers: chat template, model identity), ``{}`` where it has none.

        Asked once, on first use (never at construction: a server may start after the evaluator is built)."""
        with self._lock:
            if self._props is None:
                try:
                    got = self._request("GET", f"{self._root()}/props")
                    self._props = got if isinstance(got, dict) else {}
                except _HTTPStatus:
                    self._props = {}
            return self._props

    @property
    def identity(self) -> str:
        """The model's identity for cache keys: the weights' identity where the server publishes it (``rlpc
        serve-reader`` does: the GGUF's sha256, whatever port it listens on), else the URL and model name."""
        served = self.props().get("model_identity")
        return f"openai:{self.model}@{served}" if served else f"openai:{self.base_url}#{self.model}"

    # -- likelihood from prompt log-probabilities
    def chat_renderer(self) -> tuple[str, Callable[[str], str]]:
        """``(template identity, render(user message) -> prompt text ending where the reply begins)``."""
        props = self.props() if self.chat_template_source == "auto" else {}
        with self._lock:
            if self._template is None:
                self._template = self._load_template(props)
            return self._template

    def _load_template(self, props: dict[str, Any]) -> tuple[str, Callable[[str], str]]:
        from ..chat_template import plain_renderer, renderer

        src = self.chat_template_source
        if src == "none":
            return "plain", plain_renderer()
        if src != "auto":
            text = Path(src).expanduser().read_text(encoding="utf-8")
            return renderer(text, bos_token="", eos_token="")
        template = props.get("chat_template")
        if not template:
            raise ReaderCapabilityError(
                f"the reader at {self.base_url} does not publish its chat template (GET {self._root()}/props has "
                "none), which a likelihood needs to score the target as the assistant's reply; pass "
                "chat_template='path/to/template.jinja' (or 'none' for plain text)")
        return renderer(template, bos_token=props.get("bos_token") or "", eos_token=props.get("eos_token") or "")

    @property
    def likelihood_identity(self) -> str:
        return f"{self.identity}|template={self.chat_renderer()[0]}"

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[int, float]]:
        _, render = self.chat_renderer()

        def one(i: int) -> float:
            prefix = render(pairs[i][0])
            target = pairs[i][1]
            payload = {"model": self.model, "prompt": prefix + target, "max_tokens": 1, "temperature": 0.0,
                       "echo": True, "logprobs": 0}
            out = self._post_or_incapable(
                f"{self.base_url}/completions", payload,
                lambda err: f"the reader at {self.base_url} cannot give prompt log-probabilities (POST /completions "
                            f"with echo and logprobs answered HTTP {err.status}: {err.body[:200]}); likelihoods need a "
                            "llama.cpp server (`rlpc serve-reader`, logprobs on) or vLLM, or an in-process reader "
                            "(llamacpp:...)")
            return _target_mean(out, len(prefix), len(prefix) + len(target), self.base_url)

        return self._pool(len(pairs), one)


class _HTTPStatus(ReaderError):
    def __init__(self, url: str, status: int, body: str):
        super().__init__(f"the reader at {url} answered HTTP {status}: {body}")
        self.status, self.body = status, body


def _target_mean(out: dict[str, Any], start: int, end: int, where: str) -> float:
    """Mean log-probability of the echoed tokens that lie in characters ``[start, end)`` of the prompt."""
    try:
        lp = out["choices"][0]["logprobs"]
        offsets, values = lp["text_offset"], lp["token_logprobs"]
    except (KeyError, IndexError, TypeError):
        raise ReaderCapabilityError(
            f"the reader at {where} returned no prompt log-probabilities for echo=true, logprobs=0 (got "
            f"{json.dumps(out)[:200]}); the server must support echo with logprobs (llama.cpp's server with logits on, "
            "vLLM)") from None
    tokens = lp.get("tokens") or [""] * len(offsets)
    picked = []
    for off, val, tok in zip(offsets, values, tokens):
        # a token belongs to the target when it ends inside it (one straddling the boundary counts: it carries
        # the target's first characters); the one generated token after the prompt is left out
        if off is not None and off + len(tok or "") > start and off < end and val is not None:
            picked.append(float(val))
    if not picked:
        raise ReaderCapabilityError(f"the reader at {where} echoed no log-probabilities for the target's tokens; the "
                                    "server must echo the prompt's tokens with their offsets (text_offset)")
    return sum(picked) / len(picked)


__all__ = ["OpenAIBackend", "parse_target"]
