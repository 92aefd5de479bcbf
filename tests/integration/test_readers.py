"""Reader backends behind the one Evaluator: spec rules, the OpenAI-compatible client's HTTP behaviour, llama.cpp
in process, and a real llama.cpp server (``rlpc serve-reader``) started here on 127.0.0.1 with SmolLM2's GGUF.

Generated text is never compared with a fixed string: only with what another path of the same model gives for the
same prompt, or with properties any reply has.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rlpc_core.backends import (ReaderCapabilityError, ReaderError, ReaderUnavailable, backend_kind,
                                make_backend)
from rlpc_core.backends import openai as openai_backend
from rlpc_core.evaluator import EvalCache, Evaluator

ROOT = Path(__file__).resolve().parents[2]
SMOL = "smollm2-135m-instruct"


def _has_llama_cpp() -> bool:
    from rlpc_core.backends.llamacpp import available

    return available()


needs_llama_cpp = pytest.mark.skipif(not _has_llama_cpp(), reason="llama-cpp-python is not installed (pip install "
                                     "'rlpc[reader]'; CI installs it)")


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(openai_backend, "BACKOFF_BASE", 0.01)


# ---------------------------------------------------------------- specs and settings

def test_spec_kinds_and_unknown_settings():
    assert backend_kind("llamacpp:x") == "llamacpp" and backend_kind("openai:http://h/v1#m") == "openai"
    assert backend_kind(SMOL) == "transformers"
    with pytest.raises(ValueError, match="n_ctx is not a setting of transformers readers"):
        make_backend(SMOL, options={"n_ctx": 4096})
    with pytest.raises(ValueError, match="valid settings: concurrency, timeout"):
        make_backend("openai:http://127.0.0.1:9/v1#m", options={"n_ctx": 1})
    with pytest.raises(ValueError, match="names no model"):
        Evaluator("openai:http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="base URL like http"):
        Evaluator("openai:127.0.0.1:9#m")
    with pytest.raises(ValueError, match="concurrency=0"):
        Evaluator("openai:http://127.0.0.1:9/v1#m", concurrency=0)
    with pytest.raises(ValueError, match="chat_template"):
        Evaluator("openai:http://127.0.0.1:9/v1#m", chat_template="no/such/file.jinja")


def test_gguf_only_alias_refuses_transformers():
    from rlpc_core.models import ModelError, resolve

    with pytest.raises(ModelError, match="llamacpp:qwen2.5-coder-1.5b-instruct"):
        resolve("qwen2.5-coder-1.5b-instruct")
    with pytest.raises(ModelError, match="llamacpp:qwen2.5-coder-1.5b-instruct"):
        Evaluator("qwen2.5-coder-1.5b-instruct", cache=False)


def test_chat_template_renders_a_generation_prompt():
    from rlpc_core.chat_template import renderer

    template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    ident, render = renderer(template, eos_token="</s>")
    assert render("hi") == "<|user|>hi</s><|assistant|>"
    assert ident == renderer(template, eos_token="</s>")[0] != renderer(template, eos_token="<e>")[0]
    _, unsafe = renderer("{{ ''.__class__.__mro__ }}")
    with pytest.raises(Exception, match="unsafe|access"):
        unsafe("x")  # a template from a model file or a server runs in Jinja's sandbox


# ---------------------------------------------------------------- the HTTP client against a scripted server

class Scripted(BaseHTTPRequestHandler):
    """A tiny OpenAI-shaped server whose answers a test scripts (status codes, delays): exercises the client's HTTP
    behaviour. The real llama.cpp server is tested below."""

    script: list = []
    seen: list = []
    in_flight = 0
    max_in_flight = 0
    lock = threading.Lock()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self):
        cls = type(self)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        with cls.lock:
            cls.seen.append((self.command, self.path, dict(self.headers), body))
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
            # the script drives POSTs; GET /props (asked once for the model's identity) always answers 404 here
            step = cls.script.pop(0) if cls.script and self.command == "POST" else ("ok",)
        try:
            kind = step[0]
            if kind == "sleep":
                time.sleep(step[1])
                kind = "ok"
            if kind == "status":
                self._reply(step[1], {"error": {"message": "scripted"}}, step[2] if len(step) > 2 else ())
            elif self.path.endswith("/chat/completions"):
                text = body["messages"][0]["content"][::-1]
                self._reply(200, {"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                                  "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
            elif self.path.endswith("/props"):
                self._reply(404, {"error": "no props"})
            elif self.path.endswith("/completions"):
                self._reply(200, {"choices": [{"text": body["prompt"], "logprobs": None}]})
            else:
                self._reply(404, {"error": "no route"})
        finally:
            with cls.lock:
                cls.in_flight -= 1

    do_GET = do_POST = _handle


@pytest.fixture()
def scripted():
    Scripted.script, Scripted.seen, Scripted.in_flight, Scripted.max_in_flight = [], [], 0, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_retries_429_and_5xx_with_backoff_then_answers(scripted, tmp_path):
    Scripted.script = [("status", 429, [("Retry-After", "0")]), ("status", 503), ("ok",)]
    ev = Evaluator(f"openai:{scripted}#m", cache=False, retries=3)
    assert ev.generate(["abc"]) == ["cba"]
    assert [s[0] for s in Scripted.seen if s[1].endswith("/chat/completions")] == ["POST"] * 3
    body = Scripted.seen[-1][3]
    assert body["temperature"] == 0.0 and body["model"] == "m" and body["max_tokens"] == 256


def test_a_server_that_keeps_failing_raises_naming_the_url(scripted):
    Scripted.script = [("status", 500)] * 3
    ev = Evaluator(f"openai:{scripted}#m", cache=False, retries=1)
    with pytest.raises(ReaderError, match="HTTP 500"):
        ev.generate(["x"])
    dead = Evaluator("openai:http://127.0.0.1:9/v1#m", cache=False, retries=1)
    with pytest.raises(ReaderUnavailable, match=r"cannot reach the reader at http://127\.0\.0\.1:9/v1 .*rlpc serve-reader"):
        dead.generate(["x"])


def test_api_key_from_the_environment_never_stored(scripted, monkeypatch):
    monkeypatch.setenv("MY_READER_KEY", "sk-secret-123")
    ev = Evaluator(f"openai:{scripted}#m", cache=False, api_key_env="MY_READER_KEY")
    ev.generate(["hello"])
    headers = Scripted.seen[-1][2]
    assert headers.get("Authorization") == "Bearer sk-secret-123"
    for text in (repr(ev), repr(ev.backend), ev.model_key, ev.description, json.dumps(vars(ev.backend), default=str)):
        assert "sk-secret" not in text
    Scripted.script = [("status", 401)]
    with pytest.raises(ReaderError, match="MY_READER_KEY") as err:
        ev.generate(["other"])
    assert "sk-secret" not in str(err.value)


def test_concurrency_is_bounded_and_order_kept(scripted):
    Scripted.script = [("sleep", 0.2)] * 8
    ev = Evaluator(f"openai:{scripted}#m", cache=False, concurrency=3)
    prompts = [f"prompt {i}" for i in range(8)]
    assert ev.generate(prompts) == [p[::-1] for p in prompts]
    assert 2 <= Scripted.max_in_flight <= 3


def test_a_server_without_the_runner_up_route_is_a_capability_error(scripted):
    ev = Evaluator(f"openai:{scripted}#m", cache=False)
    with pytest.raises(ReaderCapabilityError, match="rlpc serve-reader"):
        ev.runner_ups(["q"])  # an OpenAI-compatible server has no way to force a reply's first token


def test_no_prompt_logprobs_is_a_capability_error_not_a_zero(scripted):
    ev = Evaluator(f"openai:{scripted}#m", cache=False)
    with pytest.raises(ReaderCapabilityError, match="chat template"):
        ev.loglikelihood(["q"], ["a"])  # /props answers 404: no template to render the target after
    plain = Evaluator(f"openai:{scripted}#m", cache=False, chat_template="none")
    with pytest.raises(ReaderCapabilityError, match="no prompt log-probabilities"):
        plain.loglikelihood(["q"], ["a"])  # echo answered without logprobs
    Scripted.script = [("status", 400)]
    with pytest.raises(ReaderCapabilityError, match="HTTP 400"):
        plain.loglikelihood(["q2"], ["a"])


def test_replies_are_cached_with_their_costs(scripted, tmp_path):
    ev = Evaluator(f"openai:{scripted}#m", cache=tmp_path / "c.sqlite")
    (first, cached), = ev.replies(["abc"])
    assert not cached and first.text == "cba" and first.prompt_tokens == 7 and first.seconds > 0
    (again, cached), = Evaluator(f"openai:{scripted}#m", cache=tmp_path / "c.sqlite").replies(["abc"])
    assert cached and again == first
    assert len([s for s in Scripted.seen if s[1].endswith("/chat/completions")]) == 1


# ---------------------------------------------------------------- llama.cpp in process

@needs_llama_cpp
def test_llamacpp_generates_only_new_text_times_it_and_caches(tmp_path):
    cache = tmp_path / "ll.sqlite"
    ev = Evaluator(f"llamacpp:{SMOL}", max_new_tokens=12, cache=cache, n_ctx=1024, threads=2)
    prompts = ["What is the capital of France? Answer in one word.", "Name a colour. Answer in one word."]
    out = ev.replies(prompts)
    for (reply, cached), prompt in zip(out, prompts):
        assert not cached and reply.text and 0 < reply.completion_tokens <= 12
        for leaked in ("<|im_start|>", "<|im_end|>", "You are a helpful AI assistant", prompt):
            assert leaked not in reply.text
        assert reply.prompt_tokens > 20 and reply.prefill_seconds > 0 and reply.generation_seconds > 0
    # the second prompt shares the chat template's system turn with the first: its KV cache is reused
    assert out[1][0].reused_tokens > 5
    again = Evaluator(f"llamacpp:{SMOL}", max_new_tokens=12, cache=cache, n_ctx=1024, threads=2).replies(prompts)
    assert [r for r, _ in again] == [r for r, _ in out] and all(c for _, c in again)
    with pytest.raises(ReaderError, match="n_ctx=1024"):
        ev.generate(["word " * 1500])


@needs_llama_cpp
def test_llamacpp_template_matches_llama_cpp_python_and_likelihoods_match_full_logits():
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from rlpc_core.backends.llamacpp import chat_tokens, token_logprobs
    from rlpc_core.models import gguf_path

    backend = make_backend(f"llamacpp:{SMOL}", options={"n_ctx": 1024, "threads": 2})
    llm, lock, render = backend._load()
    fmt = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token=llm._model.token_get_text(llm.token_eos()),
                              bos_token=llm._model.token_get_text(llm.token_bos()))
    msg = "Context: Paris is in France.\n\nQuestion: Where is Paris?"
    assert render(msg) == fmt(messages=[{"role": "user", "content": msg}]).prompt
    tokens = chat_tokens(llm, render(msg)) + llm.tokenize(b"In France.", add_bos=False)
    with lock:
        fast = token_logprobs(llm, tokens, 10)
        again = token_logprobs(llm, tokens, 10)  # the whole prefix from the KV cache
    full = Llama(model_path=str(gguf_path(SMOL)), n_ctx=1024, n_threads=2, logits_all=True, verbose=False)
    full.eval(tokens)
    scores = np.asarray(full.scores[: len(tokens)], dtype=np.float64)
    logp = scores - np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1, keepdims=True)) - scores.max(1, keepdims=True)
    expected = [logp[i - 1, tokens[i]] for i in range(10, len(tokens))]
    full.close()
    assert len(fast) == len(expected) and np.allclose(fast, expected, atol=2e-3) and np.allclose(again, fast, atol=1e-5)


@needs_llama_cpp
def test_llamacpp_runner_ups_begin_with_the_next_likeliest_tokens_and_go_on_greedily(tmp_path):
    # checked against a second instance that computes every logit: the runner-ups' first tokens are the likeliest
    # after the greedy one's, with the full logits' log-probabilities, and each goes on as plain greedy decoding
    # from that token does. Close, not equal: the prompt's last token is decoded alone here (the rest of its KV
    # cache reused) and within the whole prompt's batch there, and quantized kernels round differently; near-ties
    # may swap places, so the likeliest four are compared as a set.
    import numpy as np
    from llama_cpp import Llama

    from rlpc_core.backends.llamacpp import chat_tokens
    from rlpc_core.models import gguf_path

    cache = tmp_path / "ru.sqlite"
    ev = Evaluator(f"llamacpp:{SMOL}", max_new_tokens=8, cache=cache, n_ctx=1024, threads=2)
    prompt = "Name a colour. Answer in one word."
    greedy = ev.generate([prompt])[0]
    (alts,) = ev.runner_ups([prompt], k=2)
    llm, _, render = ev.backend._load()
    tokens = chat_tokens(llm, render(prompt))
    full = Llama(model_path=str(gguf_path(SMOL)), n_ctx=1024, n_threads=2, logits_all=True, verbose=False)
    full.eval(tokens)
    row = np.asarray(full.scores[len(tokens) - 1], dtype=np.float64)
    logp = row - row.max() - np.log(np.exp(row - row.max()).sum())
    order = np.argsort(-logp)
    expected = {}
    for first in order[1:4]:
        more = full.create_completion(tokens + [int(first)], max_tokens=8, temperature=0.0, top_k=1, seed=0)
        head = full.detokenize([int(first)]).decode("utf-8", errors="ignore")
        expected[(head + more["choices"][0]["text"]).strip()] = float(logp[first])
    assert greedy.startswith(full.detokenize([int(order[0])]).decode("utf-8", errors="ignore").strip())
    full.close()
    assert len(alts) == 2 and alts[0][1] >= alts[1][1] and greedy not in [t for t, _ in alts]
    for text, lp in alts:
        assert text in expected and lp == pytest.approx(expected[text], abs=0.1), (text, lp, expected)
    again = Evaluator(f"llamacpp:{SMOL}", max_new_tokens=8, cache=cache, n_ctx=1024, threads=2)
    assert again.runner_ups([prompt], k=2) == [alts]  # from the cache: the model is not loaded for it
    assert again.backend._render is None
    with pytest.raises(ReaderCapabilityError, match="runner-up"):
        Evaluator(SMOL, cache=False).runner_ups([prompt])


@needs_llama_cpp
def test_llamacpp_likelihood_prefers_the_right_context_like_transformers(tmp_path):
    prompts = ["Context: The Eiffel Tower is in Paris.\n\nQuestion: In which city is the Eiffel Tower?",
               "Context: It was finished in 1889.\n\nQuestion: In which city is the Eiffel Tower?"]
    targets = ["Paris", "Paris"]
    cpp = Evaluator(f"llamacpp:{SMOL}", cache=False, n_ctx=1024, threads=2).loglikelihood(prompts, targets)
    hf = Evaluator(SMOL, cache=False).loglikelihood(prompts, targets)
    assert cpp[0] > cpp[1] + 0.5 and hf[0] > hf[1] + 0.5
    # the same weights (Q4_1 in llama.cpp, dequantized to fp32 for transformers): close, not identical
    assert cpp == pytest.approx(hf, abs=0.6)


# ---------------------------------------------------------------- a real llama.cpp server on 127.0.0.1

@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    if not _has_llama_cpp():
        pytest.skip("llama-cpp-python is not installed (pip install 'rlpc[reader]'; CI installs it)")
    from rlpc_core.reader_server import ReaderServer

    server = ReaderServer(SMOL, n_ctx=1024, threads=2, log_path=tmp_path_factory.mktemp("srv") / "server.log")
    with server:
        yield server


@needs_llama_cpp
def test_the_servers_runner_ups_are_the_in_process_ones(smol_server, tmp_path):
    prompt = "Context: The depot opened in 1951. Its architect was Hanna Reuter.\n\nQuestion: Who built it?"
    served = Evaluator(smol_server.spec, max_new_tokens=8, cache=False).runner_ups([prompt], k=2)
    local = Evaluator(f"llamacpp:{SMOL}", max_new_tokens=8, cache=False, n_ctx=1024, threads=2).runner_ups([prompt], k=2)
    assert [t for t, _ in served[0]] == [t for t, _ in local[0]] and len(served[0]) == 2
    assert [lp for _, lp in served[0]] == pytest.approx([lp for _, lp in local[0]], abs=0.1)


@needs_llama_cpp
def test_server_answers_as_in_process_llama_cpp_does(smol_server):
    import urllib.request

    props = json.loads(urllib.request.urlopen(smol_server.base_url[:-3] + "/props").read())
    assert props["chat_template"] and props["model_identity"].startswith(f"llamacpp:{SMOL}@")
    served = Evaluator(smol_server.spec, max_new_tokens=12, cache=False)
    local = Evaluator(f"llamacpp:{SMOL}", max_new_tokens=12, cache=False, n_ctx=1024, threads=2)
    prompts = ["Context: The Eiffel Tower is in Paris.\n\nQuestion: In which city is the Eiffel Tower?",
               "What is 2 + 2? Answer with a number.", "Name a fruit."]
    assert served.generate(prompts) == local.generate(prompts)  # same template, same greedy decoding
    targets = ["Paris.", "4", "An apple."]
    assert served.loglikelihood(prompts, targets) == pytest.approx(local.loglikelihood(prompts, targets), abs=1e-4)
    # the model's identity comes from the weights, not the port: a restarted server on another port hits the cache
    assert served.model_key == f"openai:{SMOL}@{props['model_identity']}"


@needs_llama_cpp
def test_server_echo_logprobs_are_teacher_forced(smol_server):
    import urllib.error
    import urllib.request

    from rlpc_core.backends.llamacpp import token_logprobs

    prompt = "The capital of France is Paris. The capital of Germany is Berlin."
    req = urllib.request.Request(smol_server.base_url + "/completions", method="POST",
                                 data=json.dumps({"prompt": prompt, "echo": True, "logprobs": 0, "max_tokens": 1}).encode(),
                                 headers={"Content-Type": "application/json"})
    lp = json.loads(urllib.request.urlopen(req).read())["choices"][0]["logprobs"]
    assert "".join(lp["tokens"]) == prompt and lp["text_offset"][0] == 0 and lp["token_logprobs"][0] is None
    backend = make_backend(f"llamacpp:{SMOL}", options={"n_ctx": 1024, "threads": 2})
    llm, lock, _ = backend._load()
    with lock:
        tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        expected = token_logprobs(llm, tokens, 1)
    assert lp["token_logprobs"][1:] == pytest.approx(expected, abs=1e-4)
    # " Paris" after "The capital of France is" is likely; llama-cpp-python's own route gave it -8.5 (off by one)
    paris = lp["tokens"].index(" Paris")
    assert lp["token_logprobs"][paris] > -3
    for bad in (b"[1, 2]", b"not json", json.dumps({"prompt": prompt, "echo": True, "logprobs": 5}).encode()):
        req = urllib.request.Request(smol_server.base_url + "/completions", method="POST", data=bad,
                                     headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req)
        assert err.value.code == 400 and json.loads(err.value.read())["error"]["message"]


@needs_llama_cpp
def test_concurrent_requests_against_the_server(smol_server, tmp_path):
    ev = Evaluator(smol_server.spec, max_new_tokens=6, cache=tmp_path / "c.sqlite", concurrency=4)
    prompts = [f"Count to {i}." for i in range(1, 9)]
    replies = ev.replies(prompts)
    assert len(replies) == 8 and all(r.text and not c for r, c in replies)
    assert len(EvalCache(tmp_path / "c.sqlite")) == 8


@needs_llama_cpp
def test_a_server_killed_mid_run_gives_a_clear_error_and_keeps_every_answer(tmp_path):
    from rlpc_core.reader_server import ReaderServer

    cache = tmp_path / "c.sqlite"
    prompts = [f"Write one sentence about the number {i}." for i in range(8)]
    server = ReaderServer(SMOL, n_ctx=1024, threads=2, log_path=tmp_path / "server.log").start()
    try:
        ev = Evaluator(server.spec, max_new_tokens=16, cache=cache, concurrency=1, retries=2)

        def kill_after_three():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if cache.exists() and len(EvalCache(cache)) >= 3:
                    os.killpg(server.proc.pid, signal.SIGKILL)
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_after_three)
        killer.start()
        with pytest.raises(ReaderUnavailable, match=server.base_url.replace(".", r"\.")) as err:
            ev.generate(prompts)
        killer.join()
        assert "kept in the evaluator's cache" in str(err.value)
    finally:
        server.stop()
    done = len(EvalCache(cache))
    assert 3 <= done < len(prompts)
    with ReaderServer(SMOL, n_ctx=1024, threads=2, log_path=tmp_path / "server2.log") as again:  # another port
        out = Evaluator(again.spec, max_new_tokens=16, cache=cache).replies(prompts)
    assert sum(c for _, c in out) == done  # every answer computed before the kill came from the cache


@needs_llama_cpp
def test_serve_reader_refuses_a_public_host_without_a_key(monkeypatch):
    env = {k: v for k, v in os.environ.items() if k != "RLPC_READER_API_KEY"}
    p = subprocess.run([sys.executable, "-m", "rlpc_core.cli", "serve-reader", SMOL, "--host", "0.0.0.0"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "RLPC_READER_API_KEY" in p.stderr and "127.0.0.1" in p.stderr


@needs_llama_cpp
def test_server_with_an_api_key(tmp_path, monkeypatch):
    from rlpc_core.reader_server import ReaderServer

    monkeypatch.setenv("RLPC_READER_API_KEY", "local-key-42")
    with ReaderServer(SMOL, n_ctx=512, threads=2, log_path=tmp_path / "s.log") as server:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        with pytest.raises(ReaderError, match="OPENAI_API_KEY"):
            Evaluator(server.spec, cache=False, max_new_tokens=4).generate(["hi"])
        monkeypatch.setenv("OPENAI_API_KEY", "local-key-42")
        assert Evaluator(server.spec, cache=False, max_new_tokens=4).generate(["hi"])[0]


@needs_llama_cpp
def test_rewards_take_a_reader_spec(tmp_path):
    """The reward registry's evaluator rewards run on any reader: here llama.cpp with its settings."""
    from rlpc_core.rewards import get_reward

    fn = get_reward("answer_likelihood", evaluator={"model": f"llamacpp:{SMOL}", "n_ctx": 1024, "threads": 2,
                                                    "cache": str(tmp_path / "r.sqlite")}, task="qa")
    original = "The Eiffel Tower is in Paris. It was finished in 1889."
    scores = fn(prompts=["p"] * 2, completions=["The Eiffel Tower is in Paris.", "It was finished in 1889."],
                original=[original] * 2, question=["In which city is the Eiffel Tower?"] * 2, answer=[["Paris"]] * 2)
    assert 0.0 <= scores[1] < scores[0] <= 1.0
    with pytest.raises(ValueError, match="not a setting of llamacpp readers"):
        get_reward("answer_likelihood", evaluator={"model": f"llamacpp:{SMOL}", "concurrency": 2}, task="qa")


@needs_llama_cpp
def test_reader_accuracy_scores_the_readers_own_answer_and_skips_tasks_it_is_not_asked(tmp_path):
    """The sparse reader reward: the reader answers the compressed prompt (the question apart, never compressed);
    the answer is scored against the gold; rows of tasks outside ``tasks`` score None (no signal, no generation)."""
    from rlpc_core.rewards import get_reward

    cache = tmp_path / "acc.sqlite"
    fn = get_reward("reader_accuracy", evaluator={"model": f"llamacpp:{SMOL}", "n_ctx": 1024, "threads": 2,
                                                  "cache": str(cache)}, task="qa", max_new_tokens=12,
                    tasks=["qa"])
    kept = "The Eiffel Tower is in Paris. It was finished in 1889."
    scores = fn(prompts=["p"] * 4, completions=[kept, "It was finished in 1889.", "", "Ann has 3 cats."],
                question=["In which city is the Eiffel Tower?"] * 3 + [None], answer=[["Paris"]] * 3 + ["#### 3"],
                task=["qa", "qa", "qa", "math"])
    assert scores[0] > scores[1] and scores[0] >= 0.5  # the context that holds the answer is answered from
    assert scores[2] == 0.0  # an empty completion is a wrong one
    assert scores[3] is None  # math is not asked: no generation for it
    from rlpc_core.evaluator import EvalCache

    assert len(EvalCache(cache)) == 2  # two generations: the empty completion and the math row cost nothing


@needs_llama_cpp
def test_prefetch_serves_a_likelihood_and_an_answer_with_one_prefill(tmp_path):
    """The reader reward's two halves on the same compressed prompt: prefetched together, each prompt is prefilled
    once (the reply reuses the likelihood's KV cache), and the rewards then compute nothing and score the same."""
    from rlpc_core.evaluator import EvalCache
    from rlpc_core.rewards import get_reward, prefetch_rewards

    def rewards(cache):
        settings = {"model": f"llamacpp:{SMOL}", "n_ctx": 1024, "threads": 2, "cache": str(cache)}
        return [get_reward("answer_likelihood", evaluator=settings, task="qa"),
                get_reward("reader_accuracy", evaluator=settings, task="qa", max_new_tokens=8)]

    original = "The Eiffel Tower is in Paris. It was finished in 1889. It is 330 metres tall."
    batch = dict(completions=["The Eiffel Tower is in Paris.", "It was finished in 1889.", ""],
                 original=[original] * 3, question=["In which city is the Eiffel Tower?"] * 3, answer=[["Paris"]] * 3)
    plain = [fn(prompts=["p"] * 3, **batch) for fn in rewards(tmp_path / "plain.sqlite")]

    funcs = rewards(tmp_path / "shared.sqlite")
    assert funcs[0].evaluator is funcs[1].evaluator  # same settings: one reader, one cache
    # likelihoods of the original and of 2 non-empty compressions, and 2 replies (the empty one costs nothing)
    assert prefetch_rewards(funcs, ["p"] * 3, **batch) == 5
    cache = EvalCache(tmp_path / "shared.sqlite")
    assert len(cache) == 5
    assert [fn(prompts=["p"] * 3, **batch) for fn in funcs] == plain
    assert len(cache) == 5  # the rewards found everything cached
    asked = funcs[1].reader_requests(["p"] * 3, **batch)
    replies = [r for r, _ in funcs[1].evaluator.replies([q.prompt for q in asked], max_new_tokens=8,
                                                        stop=asked[0].stop)]
    assert len(replies) == 2
    for r in replies:  # computed right after the same prompt's likelihood: all but one prompt token reused
        assert r.reused_tokens == r.prompt_tokens - 1, r


@needs_llama_cpp
def test_a_reader_behind_a_server_guides_the_compressor(smol_server, monkeypatch):
    from rlpc_core import Compressor
    from rlpc_core.guide import Guide

    text = ("The Harbour Line opened in the port city of Kessel in 1902 and was the first tram line of the city. Its "
            "green cars ran every ten minutes between the docks and the cathedral square. Its route was drawn by "
            "Ilse Marten, a surveyor from Rostock.")
    query = "Who drew the route of the Harbour Line?"
    compressor = Compressor(guide=smol_server.spec)
    out = compressor.compress(text, rate=0.5, query=query)
    assert out.fallback is None and out.budget_met
    asked = compressor.guide.evaluator.answer("qa", [text], [query])[0]
    assert asked.cached  # the compressor's call stored the reply: the same text and query are answered once
    # what the served reader answered is all the guide adds: the same answer given by hand selects the same words
    monkeypatch.setattr(Guide, "answer", lambda self, t, q: str(asked.answer or ""))
    assert Compressor(guide=smol_server.spec).compress(text, rate=0.5, query=query).text == out.text


def test_a_guide_whose_server_is_down_compresses_without_it_naming_the_url():
    from rlpc_core import Compressor

    text = "The depot opened in 1951. Its architect was Hanna Reuter. The roof burned in 1960 and was rebuilt."
    out = Compressor(guide="openai:http://127.0.0.1:9/v1#guide").compress(text, rate=0.5, query="Who built it?")
    assert out.text == Compressor().compress(text, rate=0.5, query="Who built it?").text and out.budget_met
    assert "guide 'openai:http://127.0.0.1:9/v1#guide' raised" in out.fallback and "127.0.0.1:9" in out.fallback
