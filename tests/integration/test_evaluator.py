"""The frozen evaluator: answer extraction, prompts, the shared disk cache, and real SmolLM2 generation and
likelihoods (generated text is never compared exactly: only properties that any sane model output has)."""

import doctest
import multiprocessing
import sqlite3
import sys

import pytest

import rlpc_core.evaluator as evaluator_module
from rlpc_core.evaluator import (TASKS, EvalCache, Evaluator, answers_match, build_prompt, cache_key,
                                 extract_math_answer, extract_qa_answer, normalize_answer, parse_number, qa_em,
                                 qa_f1)
from rlpc_core.backends.hf import TransformersBackend
from rlpc_core.models import ModelError

SMOL = "smollm2-135m-instruct"


def test_doctests():
    assert doctest.testmod(evaluator_module).failed == 0


# ---------------------------------------------------------------- answer extraction

@pytest.mark.parametrize("text, expected", [
    ("Janet sells 9 eggs.\nShe makes 9 * 2 = $18.\n#### 18", 18.0),
    ("#### 1,000", 1000.0),
    ("#### $5", 5.0),
    ("The price is 3.50 each.\n#### 3.50", 3.5),
    ("#### -7", -7.0),
    ("#### 3/4", 0.75),
    ("Step 1 ... #### The total is 30 eggs.", 30.0),
    ("#### 12\nQuestion: next problem ... #### 99", 12.0),  # a run-on answer: the first statement counts
    ("#### \n\\boxed{7}", 7.0),  # '####' without a number falls through to \boxed
    ("So the answer is \\boxed{42}. Then 7 more.", 42.0),
    ("\\boxed{\\frac{1}{2}}", 0.5),
    ("\\boxed{\\$1,234.50}", 1234.5),
    ("16 - 3 - 4 = 9 eggs, so 9 * 2 = 18 dollars.", 18.0),
    ("It costs $80,000 plus $50,000, so $130,000.", 130000.0),
    ("She had 5-3 = 2 left.", 2.0),
    ("I do not know.", None),
    ("", None),
])
def test_extract_math_answer(text, expected):
    assert extract_math_answer(text) == expected


def test_parse_number_edge_cases():
    assert parse_number("x2 and 7") == 7.0  # digits glued to a word are not a number
    assert parse_number("1/0") is None
    assert parse_number("−4 degrees") == -4.0  # a unicode minus
    assert parse_number("a .5 chance") == 0.5


@pytest.mark.parametrize("text, expected", [
    ("France", "France"),
    ("Answer: France.", "France"),
    ("The answer is: the 10th century!", "the 10th century"),
    ("  \n**Rollo**\nHe was a Viking.", "Rollo"),
    ('"Paris"', "Paris"),
    ("", ""),
])
def test_extract_qa_answer(text, expected):
    assert extract_qa_answer(text) == expected


def test_answers_match_and_squad_metrics():
    assert answers_match("math", 18.0, 18.0) and answers_match("math", 1e6, 1e6 + 1)
    assert not answers_match("math", 18.0, 19.0)
    assert not answers_match("math", None, None)  # two failures to answer are not agreement
    assert answers_match("qa", "The Normans", "normans.")
    assert not answers_match("qa", "", "")
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert qa_em("the France", ["France", "Paris"]) == 1.0
    assert qa_em("Paris", "France") == 0.0
    assert qa_f1("Paris France", ["France"]) == pytest.approx(2 / 3)
    assert qa_f1("", []) == 1.0 and qa_f1("France", []) == 0.0  # SQuAD v2: no answer is the right answer


def test_build_prompt_rules():
    math_prompt = build_prompt("math", "Janet has 3 apples.")
    assert "Janet has 3 apples." in math_prompt and "####" in math_prompt
    qa_prompt = build_prompt("qa", "CTX", "Q?")
    assert qa_prompt.index("CTX") < qa_prompt.index("Q?")
    with pytest.raises(ValueError, match="needs the uncompressed question"):
        build_prompt("qa", "CTX")
    with pytest.raises(ValueError, match="no separate question"):
        build_prompt("math", "problem", "question?")
    with pytest.raises(ValueError, match="valid tasks are math, qa"):
        build_prompt("summarise", "x")
    assert set(TASKS) == {"math", "qa", "math-fewshot", "mc", "prompt"}
    # a user's {"prompt", "reference"} row: the compressed prompt is the whole message, sent as it is
    assert build_prompt("prompt", "Translate: hello") == "Translate: hello"
    with pytest.raises(ValueError, match="no separate question"):
        build_prompt("prompt", "Translate: hello", "extra question?")
    fewshot = build_prompt("math-fewshot", "Question: 1+1?\nAnswer: 2\n#### 2", "What is 2+2?")
    assert fewshot.index("#### 2") < fewshot.index("What is 2+2?") and fewshot.endswith("Answer:")
    with pytest.raises(ValueError, match="needs the uncompressed question"):
        build_prompt("mc", "context only")


def test_constructor_checks_settings_without_loading():
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        Evaluator(max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size"):
        Evaluator(batch_size=True)
    with pytest.raises(ValueError, match="dtype"):
        Evaluator(dtype="int8")
    with pytest.raises(ValueError, match="cache="):
        Evaluator(cache=3)
    with pytest.raises(ModelError, match="no such folder"):
        Evaluator("./no/such/evaluator")


# ---------------------------------------------------------------- the cache

def _write_entries(path, worker, n, cache):
    # `cache` was used by the parent before fork(): the child must open its own connection, not reuse that one.
    for i in range(n):
        cache.put(f"shared-{i}", {"worker": worker, "i": i})  # both workers write these keys
        cache.put_many({f"w{worker}-{i}": [worker, i, "é"]})


def test_cache_roundtrip_and_keys(tmp_path):
    cache = EvalCache(tmp_path / "c.sqlite")
    cache.put_many({"a": "text", "b": -1.25, "c": None})
    assert cache.get_many(["a", "b", "c", "zz"]) == {"a": "text", "b": -1.25, "c": None}
    assert cache.get("zz", "default") == "default" and len(cache) == 3
    k = cache_key("m", "gen", 256, "prompt")
    assert k == cache_key("m", "gen", 256, "prompt")
    assert len({k, cache_key("m2", "gen", 256, "prompt"), cache_key("m", "ll", 256, "prompt"),
                cache_key("m", "gen", 8, "prompt"), cache_key("m", "gen", 256, "prompt", "target")}) == 5


def test_a_journal_carries_the_cache_to_another_machine(tmp_path):
    # a run's folder holds the journal; the sqlite file is per machine: a fresh machine starts with an empty one
    journal = tmp_path / "run" / "reader_replies.jsonl"
    first = EvalCache(tmp_path / "machine-1.sqlite", journal=journal)
    first.put_many({"a": {"text": "Paris", "prompt_tokens": 12}, "b": -0.5})
    first.put("c", None)
    assert len(journal.read_text(encoding="utf-8").splitlines()) == 3
    with journal.open("a", encoding="utf-8") as fh:
        fh.write('{"key": "torn", "val')  # a run killed mid-write leaves half a line: skipped, not fatal
    second = EvalCache(tmp_path / "machine-2.sqlite", journal=journal)
    assert second.get_many(["a", "b", "c", "torn"]) == {"a": {"text": "Paris", "prompt_tokens": 12}, "b": -0.5,
                                                        "c": None}
    assert len(second) == 3
    second.put("d", 4)  # appended after the torn line, on a line of its own
    assert EvalCache(tmp_path / "machine-5.sqlite", journal=journal).get_many(["a", "d"]) == {
        "a": {"text": "Paris", "prompt_tokens": 12}, "d": 4}
    # an entry the machine already has is not overwritten by the journal's copy, and without a journal nothing is read
    third = EvalCache(tmp_path / "machine-3.sqlite")
    third.put("a", "mine")
    assert EvalCache(tmp_path / "machine-3.sqlite", journal=journal).get("a") == "mine"
    assert EvalCache(tmp_path / "machine-4.sqlite").get("a") is None
    assert "journal=" in repr(second) and Evaluator(cache=second).cache is second
    # a reply this machine had before the run is journaled when the run reads it: the folder carries all it used
    other = tmp_path / "other" / "reader_replies.jsonl"
    assert EvalCache(tmp_path / "machine-3.sqlite", journal=other).get_many(["a", "zz"]) == {"a": "mine"}
    assert EvalCache(tmp_path / "machine-6.sqlite", journal=other).get("a") == "mine"
    assert len(other.read_text(encoding="utf-8").splitlines()) == 1


@pytest.mark.skipif(sys.platform == "win32", reason="uses fork()")
def test_cache_shared_by_concurrent_processes(tmp_path):
    path = tmp_path / "shared.sqlite"
    cache = EvalCache(path)
    cache.put("parent", 1)  # the parent holds an open connection when it forks
    ctx = multiprocessing.get_context("fork")
    n = 150
    procs = [ctx.Process(target=_write_entries, args=(path, w, n, cache)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    fresh = EvalCache(path)
    assert len(fresh) == 1 + n + 2 * n
    assert fresh.get("w2-149") == [2, 149, "é"]
    assert fresh.get("shared-7")["i"] == 7
    assert cache.get("w1-0") == [1, 0, "é"]  # the parent's own connection still works
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_cache_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPC_CACHE", str(tmp_path))
    ev = Evaluator(cache=False)
    assert ev.cache is None
    monkeypatch.setattr(TransformersBackend, "_generate_batch",
                        lambda self, prompts, n, stop: [("#### 1", 3, 2, "stop")] * len(prompts))
    assert ev.answer("math", ["one"])[0].answer == 1.0
    assert not list(tmp_path.glob("*.sqlite"))


# ---------------------------------------------------------------- the real model

def test_smollm2_generates_only_new_text_and_caches(tmp_path, monkeypatch):
    cache_file = tmp_path / "eval.sqlite"
    ev = Evaluator(SMOL, max_new_tokens=8, cache=cache_file)
    problems = ["Tom has 3 apples and buys 4 more. How many apples does he have?", "What is 10 minus 7?"]
    first = ev.answer("math", problems)
    assert [a.cached for a in first] == [False, False]
    for a, problem in zip(first, problems):
        assert isinstance(a.text, str) and a.text
        # only the reply: no chat markup, no system message, no user message (the reference design leaked these)
        for leaked in ("<|im_start|>", "<|im_end|>", "You are a helpful AI assistant", "Solve this math problem",
                       problem):
            assert leaked not in a.text

    def no_model(*args, **kwargs):
        raise AssertionError("the model was called for a cached prompt")

    monkeypatch.setattr(TransformersBackend, "_generate_batch", no_model)
    again = Evaluator(SMOL, max_new_tokens=8, cache=cache_file).answer("math", problems)  # a new instance, same file
    assert [a.cached for a in again] == [True, True]
    assert [a.text for a in again] == [a.text for a in first]
    assert [a.answer for a in again] == [a.answer for a in first]


def test_loglikelihood_prefers_the_right_context(tmp_path):
    ev = Evaluator(SMOL, cache=tmp_path / "ll.sqlite")
    right, wrong = ev.loglikelihood(
        ["What is the capital of France? Answer in one word.", "What is the capital of Japan? Answer in one word."],
        ["Paris", "Paris"])
    assert right < 0 and wrong < 0
    assert right > wrong + 1.0


def test_loglikelihood_masks_prompt_and_padding(tmp_path):
    import torch

    ev = Evaluator(SMOL, batch_size=3, cache=False)
    prompts = ["Name a colour.", "A much longer prompt that needs plenty of left padding in the batch: cats.", "Hi"]
    targets = ["Blue.", "Cats purr when they are content.", "Hello there!"]
    batched = ev.loglikelihood(prompts, targets)
    alone = [ev.loglikelihood([p], [t])[0] for p, t in zip(prompts, targets)]
    assert batched == pytest.approx(alone, abs=1e-4)
    # against a plain full forward pass of one row: mean log-prob of exactly the target's tokens
    model, tok = ev.backend._load()
    prefix = tok(ev.backend.render(tok, prompts[:1])[0], add_special_tokens=False)["input_ids"]
    target = tok(targets[0], add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prefix + target])
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    expected = logp[len(prefix) - 1:, :].gather(-1, ids[0, len(prefix):].unsqueeze(-1)).mean().item()
    assert batched[0] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="targets\\[0\\] is empty"):
        ev.loglikelihood(["p"], [" "])
    with pytest.raises(ValueError, match="one target per prompt"):
        ev.loglikelihood(["p", "q"], ["t"])


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_reference_architectures_run(tmp_path, arch):
    """TinyLlama (Llama) and Phi-3 code paths, with tiny randomly initialised models of those architectures."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Phi3Config

    from rlpc_core.models import load_tokenizer

    tok = load_tokenizer(SMOL)
    size = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    config = LlamaConfig(**size) if arch == "llama" else Phi3Config(**size)
    torch.manual_seed(0)
    folder = tmp_path / arch
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    ev = Evaluator(folder, max_new_tokens=3, batch_size=2, cache=tmp_path / "c.sqlite")
    replies = ev.generate(["short", "a somewhat longer prompt"])
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    batched = ev.loglikelihood(["short", "a somewhat longer prompt here"], ["one two", "three"])
    alone = [Evaluator(folder, cache=False).loglikelihood([p], [t])[0]
             for p, t in (("short", "one two"), ("a somewhat longer prompt here", "three"))]
    assert batched == pytest.approx(alone, abs=1e-4)
