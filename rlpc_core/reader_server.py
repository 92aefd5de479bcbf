"""Serve a reader on loopback with llama.cpp's OpenAI-compatible server, and start one for a run.

    rlpc serve-reader qwen2.5-coder-1.5b-instruct --port 8080
    # -> Evaluator("openai:http://127.0.0.1:8080/v1#qwen2.5-coder-1.5b-instruct")

    with ReaderServer("smollm2-135m-instruct") as server:     # a free port, stopped on exit
        ev = Evaluator(server.spec)

The server is llama-cpp-python's (``python -m llama_cpp.server``, ``pip install 'rlpc[reader]'``) with routes
added, so that a likelihood (and a guide's second guess) through HTTP is the one in-process:

* ``GET /props``: the GGUF's chat template and its BOS/EOS tokens, where llama.cpp's own C++ server publishes
  them; clients render ``template(message) + target`` from it;
* ``POST /v1/chat/completions`` without ``repeat_penalty``: llama-cpp-python defaults it to 1.1, so
  ``temperature=0`` would not be plain greedy decoding; here it defaults to 1.0 (no penalty), and a reply is the
  one an in-process llama.cpp reader gives for the same message;
* ``POST /rlpc/runner_ups``: the replies that begin with the next likeliest first tokens after the greedy one
  (a guide's second guess, :meth:`rlpc_core.evaluator.Evaluator.runner_ups`), which a chat endpoint cannot give;
* ``POST /v1/completions`` with ``echo`` and ``logprobs=0``: the prompt's token log-probabilities, computed
  teacher-forced from the logits of each position (:func:`rlpc_core.backends.llamacpp.token_logprobs`). The stock
  route of llama-cpp-python 0.3.36 scores each echoed token with the distribution that *follows* it when the
  model adds no BOS token (Qwen2.5 and SmolLM2 GGUFs: every value is off by one position, measured here) and
  needs ``logits_all``, which keeps an n_ctx x vocabulary buffer (2.5 GB for Qwen). Every other request goes to
  the stock routes unchanged.

Loopback by default: a reader is a local judge, not a public service. Another ``--host`` needs an API key in the
environment (``--api-key-env``, default ``RLPC_READER_API_KEY``), which clients send as a bearer token.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions' annotations at run time.

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional, Sequence

from .backends import ReaderError
from .models import cache_dir

LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_API_KEY_ENV = "RLPC_READER_API_KEY"


def _model_path(model: str) -> tuple[Path, str]:
    """The GGUF file and the served model name for an embedded alias or a .gguf path."""
    from .backends.llamacpp import resolve_gguf

    path, identity, label = resolve_gguf(model)
    return path(), (label if not label.endswith(".gguf") else label[: -len(".gguf")]), identity


# ---------------------------------------------------------------- the app (runs inside the server process)

def _echo_logprobs(llama: Any, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI legacy completion answer holding the prompt's tokens, offsets and log-probabilities."""
    from .backends.llamacpp import token_logprobs

    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ValueError("echo with logprobs takes one prompt string")
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("echo with logprobs needs a non-empty prompt string")
    add_bos = bool(llama._model.add_bos_token())
    tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)
    bos = 1 if add_bos and tokens and tokens[0] == llama.token_bos() else 0
    values = token_logprobs(llama, tokens, 1, reuse=True) if len(tokens) > 1 else []
    logprobs: list[Optional[float]] = [None] + values  # the first token has nothing to be predicted from
    # Character offsets of each token in the prompt, from the bytes each token renders to.
    rendered, offsets, pieces = b"", [], []
    for i in range(bos, len(tokens)):
        piece = llama.detokenize([tokens[i]], prev_tokens=tokens[bos:i], special=True)
        offsets.append(len(rendered.decode("utf-8", errors="ignore")))
        pieces.append(piece.decode("utf-8", errors="ignore"))
        rendered += piece
    out_lp = logprobs[bos:]
    if out_lp:
        out_lp[0] = None  # as OpenAI's API: no value for the first echoed token
    return {
        "id": f"cmpl-rlpc-{time.time_ns()}", "object": "text_completion", "created": int(time.time()),
        "model": body.get("model") or "",
        "choices": [{"text": prompt, "index": 0, "finish_reason": "length",
                     "logprobs": {"tokens": pieces, "text_offset": offsets, "token_logprobs": out_lp,
                                  "top_logprobs": [None] * len(pieces)}}],
        "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0, "total_tokens": len(tokens)},
    }


def _runner_ups(llama: Any, rendered: str, k: int, max_new_tokens: int, stop: Sequence[str]) -> list:
    """What an in-process reader's ``runner_ups`` gives for one user message, rendered with the GGUF's template."""
    from .backends.llamacpp import chat_tokens, runner_up_replies

    return runner_up_replies(llama, chat_tokens(llama, rendered), k=k, max_new_tokens=max_new_tokens, stop=stop)


def build_app(model_path: Path, *, alias: str, n_ctx: int, threads: int, api_key: Optional[str],
              identity: str = "") -> Any:
    """llama-cpp-python's FastAPI app for one GGUF, plus ``/props`` and the corrected echo-logprobs route."""
    from fastapi import Depends, Request
    from fastapi.responses import JSONResponse
    from llama_cpp.server import app as server_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings
    from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool

    from .backends.llamacpp import chat_renderer_for

    model_settings = ModelSettings(model=str(model_path), model_alias=alias, n_ctx=n_ctx, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False, seed=0)
    app = server_app.create_app(server_settings=ServerSettings(api_key=api_key), model_settings=[model_settings])
    llm = server_app._llama_proxy(alias)
    # Generation must render exactly what in-process readers and /props clients render: the GGUF's template.
    if "chat_template.default" in getattr(llm, "_chat_handlers", {}):
        llm.chat_format = "chat_template.default"
    template = llm.metadata.get("tokenizer.chat_template") or ""
    props = {"chat_template": template,
             "bos_token": llm._model.token_get_text(llm.token_bos()) if llm.token_bos() >= 0 else "",
             "eos_token": llm._model.token_get_text(llm.token_eos()) if llm.token_eos() >= 0 else "",
             "model": alias, "model_path": str(model_path), "n_ctx": n_ctx,
             "model_identity": identity}
    # compiled once: every runner-up request renders its message with it
    props["template_identity"], render = chat_renderer_for(llm)

    async def props_route() -> dict[str, Any]:
        return props

    def bad_request(message: str) -> Any:
        return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status_code=400)

    async def parsed(request: Request, model: Any) -> tuple[Optional[dict[str, Any]], Any]:
        """``(body, typed request)``, or ``(None, a 400 answer)`` for a body that is not a valid request."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                return None, bad_request("the body must be a JSON object")
            if model is CreateChatCompletionRequest:
                body.setdefault("repeat_penalty", 1.0)  # greedy means greedy: no penalty unless the client asks
            return body, model(**body)
        except json.JSONDecodeError as err:
            return None, bad_request(f"the body is not JSON: {err}")
        except ValidationError as err:
            return None, bad_request(f"invalid request: {err}")

    async def completions(request: Request) -> Any:
        body, typed = await parsed(request, CreateCompletionRequest)
        if body is None:
            return typed
        if not (body.get("echo") and body.get("logprobs") is not None):
            return await server_app.create_completion(request=request, body=typed)
        if body.get("logprobs"):
            return bad_request("echo gives prompt log-probabilities with logprobs=0 only (no top alternatives)")
        async with contextlib.asynccontextmanager(server_app.get_llama_proxy)() as proxy:
            llama = proxy(body.get("model"))
            try:
                return await run_in_threadpool(_echo_logprobs, llama, body)
            except (ValueError, ReaderError) as err:
                return bad_request(str(err))

    async def chat(request: Request) -> Any:
        body, typed = await parsed(request, CreateChatCompletionRequest)
        return typed if body is None else await server_app.create_chat_completion(request=request, body=typed)

    async def runner_ups(request: Request) -> Any:
        try:
            body = await request.json()
        except json.JSONDecodeError as err:
            return bad_request(f"the body is not JSON: {err}")
        usage = ('POST /rlpc/runner_ups takes {"prompt": "<the user message>", "k": 1, "max_tokens": 24, '
                 '"stop": ["\\n"]}')
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str) or not body["prompt"]:
            return bad_request(f"{usage}: the prompt must be a non-empty string")
        k, n, stop = body.get("k", 1), body.get("max_tokens", 24), body.get("stop") or []
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in (k, n)):
            return bad_request(f"{usage}: k={k!r} and max_tokens={n!r} must be positive integers")
        if not isinstance(stop, list) or not all(isinstance(x, str) for x in stop):
            return bad_request(f"{usage}: stop={stop!r} must be a list of strings")
        async with contextlib.asynccontextmanager(server_app.get_llama_proxy)() as proxy:
            llama = proxy(body.get("model"))
            try:
                out = await run_in_threadpool(_runner_ups, llama, render(body["prompt"]), k, n, stop)
            except (ValueError, ReaderError) as err:
                return bad_request(str(err))
        return {"runner_ups": [[text, logprob] for text, logprob in out]}

    deps = [Depends(server_app.authenticate)]
    before = len(app.router.routes)
    app.add_api_route("/props", props_route, methods=["GET"], dependencies=deps)
    app.add_api_route("/v1/completions", completions, methods=["POST"], dependencies=deps)
    app.add_api_route("/v1/chat/completions", chat, methods=["POST"], dependencies=deps)
    app.add_api_route("/rlpc/runner_ups", runner_ups, methods=["POST"], dependencies=deps)
    # Routes match in order: ours go first, so they answer before the stock router's /v1/completions does.
    ours = app.router.routes[before:]
    del app.router.routes[before:]
    app.router.routes[0:0] = ours
    return app


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8080, n_ctx: int = 4096, threads: Optional[int] = None,
          api_key_env: str = DEFAULT_API_KEY_ENV, quiet: bool = False) -> None:
    """Run the server in the foreground until interrupted."""
    import uvicorn

    from .backends.llamacpp import available, default_threads, INSTALL_HINT

    if not available():
        raise ReaderError(INSTALL_HINT.replace("llamacpp: readers", "serve-reader"))
    api_key = os.environ.get(api_key_env) or None
    if host not in LOOPBACK and not api_key:
        raise ValueError(f"--host {host} would serve the reader beyond this machine without a key: set the environment "
                         f"variable {api_key_env} (clients send it as a bearer token), or serve on 127.0.0.1")
    path, alias, identity = _model_path(model)
    app = build_app(path, alias=alias, n_ctx=n_ctx, threads=threads or default_threads(), api_key=api_key,
                    identity=identity)
    if not quiet:
        print(f"rlpc: serving {alias} ({path}) at http://{host}:{port}/v1; use it as "
              f"openai:http://{host}:{port}/v1#{alias}", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning" if quiet else "info")


# ---------------------------------------------------------------- starting one for a run

def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ReaderServer:
    """A reader server in a child process for the length of a ``with`` block (or until :meth:`stop`).

    ``spec`` is the ``openai:`` reader spec that reaches it. The child's output goes to ``log_path``; a server that
    exits or does not answer within ``startup_timeout`` seconds raises :class:`ReaderError` with the log's tail.
    """

    def __init__(self, model: str, *, port: Optional[int] = None, host: str = "127.0.0.1", n_ctx: int = 4096,
                 threads: Optional[int] = None, startup_timeout: float = 180.0, log_path: Optional[Path] = None):
        if host not in LOOPBACK:
            raise ValueError(f"host={host!r}: a reader server for a run listens on loopback only (127.0.0.1)")
        self.model, self.host, self.n_ctx, self.threads = model, host, n_ctx, threads
        self.port = port or free_port(host)
        self.alias = _model_path(model)[1]
        self.startup_timeout = startup_timeout
        self.log_path = log_path or (cache_dir() / "logs" / f"reader-server-{self.port}.log")
        self.proc: Optional[subprocess.Popen] = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def spec(self) -> str:
        return f"openai:{self.base_url}#{self.alias}"

    def start(self) -> "ReaderServer":
        cmd = [sys.executable, "-m", "rlpc_core.reader_server", self.model, "--host", self.host, "--port",
               str(self.port), "--n-ctx", str(self.n_ctx), "--quiet"]
        if self.threads:
            cmd += ["--threads", str(self.threads)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("w", encoding="utf-8")
        # Its own session, so stop() can end the whole process group (uvicorn's workers included).
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ReaderError(f"the reader server for {self.model} exited with status {self.proc.returncode} "
                                  f"while starting; last lines of {self.log_path}:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except urllib.error.HTTPError as err:
                if err.code in (401, 403):  # up, and asking for the key clients will send
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ReaderError(f"the reader server for {self.model} did not answer at {self.base_url} within "
                          f"{self.startup_timeout:.0f} s; last lines of {self.log_path}:\n{self._tail()}")

    def _tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=15)

    def __enter__(self) -> "ReaderServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an embedded alias with a GGUF (qwen2.5-coder-1.5b-instruct, "
                                 "qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct) or a .gguf file")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--n-ctx", type=int, default=4096, help="context window in tokens (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--api-key-env", default=DEFAULT_API_KEY_ENV,
                   help=f"environment variable holding the API key clients must send (default {DEFAULT_API_KEY_ENV}; "
                        "unset: no key, loopback only)")
    p.add_argument("--quiet", action="store_true", help="only warnings in the server log")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rlpc_core.reader_server", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        serve(args.model, host=args.host, port=args.port, n_ctx=args.n_ctx, threads=args.threads,
              api_key_env=args.api_key_env, quiet=args.quiet)
    except (ValueError, ReaderError) as err:
        print(f"rlpc serve-reader: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["DEFAULT_API_KEY_ENV", "ReaderServer", "build_app", "free_port", "main", "serve"]
