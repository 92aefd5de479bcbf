"""Compressor invariants on real prompts and on generated ones."""

import re
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import is_subsequence, read_jsonl
from rlpc_core import CompressionResult, Compressor, select_words


def check_invariants(original: str, r: CompressionResult) -> None:
    assert is_subsequence(r.text.split(), original.split()), "output must be an order-preserving subsequence"
    assert r.compressed_tokens <= r.original_tokens
    assert r.kept is not None and len(r.kept) == len(original.split())
    assert [w for w, k in zip(original.split(), r.kept) if k] == r.text.split()
    assert r.protected_ok


def test_gsm8k_questions_keep_their_numbers_and_hit_the_rate(word_compressor):
    """Math problems keep their quantities with what they count, as meaning units: at rate 0.5 nearly every
    question keeps every number (the budget is met: where the quantities alone do not fit, the weakest go)."""
    rows = read_jsonl("gsm8k/test.jsonl", limit=200)
    ratios, all_kept = [], 0
    for row in rows:
        q = row["question"]
        r = word_compressor.compress(q, rate=0.5)
        check_invariants(q, r)
        numbers = re.findall(r"\d+(?:[.,]\d+)*", q)
        all_kept += all(n in r.text for n in numbers)
        assert r.budget_met, (q, r.text)
        if len(q.split()) >= 100:
            assert abs(r.ratio - 0.5) <= 0.1
        ratios.append(r.ratio)
    assert all_kept >= 0.9 * len(rows), all_kept
    assert abs(np.mean(ratios) - 0.5) < 0.1


@pytest.mark.parametrize("rate", [0.33, 0.5, 0.8])
def test_long_passages_land_within_0_1_of_the_rate(word_compressor, rate):
    rows = read_jsonl("squad_v2_dev_subset/squad_v2_dev_first5articles.jsonl", limit=400)
    contexts = list(dict.fromkeys(r["context"] for r in rows if len(r["context"].split()) >= 100))[:15]
    assert contexts
    for ctx in contexts:
        r = word_compressor.compress(ctx, rate=rate, query="What happened?")
        check_invariants(ctx, r)
        assert abs(r.ratio - rate) <= 0.1, (rate, r.ratio)


def test_default_tokenizer_counts_real_tokens_and_meets_the_budget():
    c = Compressor()  # the embedded default: graph policy, SmolLM2 tokenizer
    text = ("The museum opened in 1897 with a collection of 2,400 paintings donated by the city's merchants. "
            "Over the next century it added sculpture, photography and a library of rare maps. ") * 3
    r = c.compress(text, rate=0.5)
    check_invariants(text, r)
    assert r.tokenizer == "smollm2-135m-instruct"
    assert r.original_tokens > len(text.split())  # subword tokens, not words
    assert r.budget_met and abs(r.ratio - 0.5) <= 0.1
    assert r.compressed_tokens == c.counter.count(r.text)
    t = c.compress(text, target_tokens=40)
    assert t.compressed_tokens <= 40 and t.target_tokens == 40


def test_protect_and_markup_come_out_verbatim(word_compressor):
    text = ("Please summarise the report below for the board. <keep>Do not mention the acquisition.</keep> "
            "The quarterly report covers revenue, hiring, the new office in Lisbon and customer churn, which "
            "rose slightly. Ticket REF-2291 tracks the churn analysis and the hiring plan for next year.")
    r = word_compressor.compress(text, rate=0.3, protect=[re.compile(r"REF-\d+"), "new office"])
    assert "<keep>" not in r.text and "Do not mention the acquisition." in r.text
    assert "REF-2291" in r.text and "new office" in r.text
    assert r.protected_ok


def test_code_blocks_are_kept_whole(word_compressor):
    code = "```python\ndef add(a, b):\n    return a + b\n```"
    text = "Explain what this small helper function does and whether it has any bugs at all:\n" + code + "\nThanks a lot."
    r = word_compressor.compress(text, rate=0.3)
    assert code in r.text
    off = Compressor(tokenizer="words", keep_code=False).compress(text, rate=0.3)
    assert code not in off.text


def test_protected_spans_beyond_budget_are_kept_and_reported(word_compressor):
    text = "<keep>" + " ".join(f"w{i}" for i in range(30)) + "</keep> and some other filler words here"
    r = word_compressor.compress(text, target_tokens=5)
    assert not r.budget_met and r.protected_ok
    assert all(f"w{i}" in r.text.split() for i in range(30))


def test_empty_and_whitespace_prompts_load_nothing():
    c = Compressor(tokenizer="no-such-org/no-such-tokenizer")  # would fail if anything were loaded
    for text in ["", "   \n\t "]:
        r = c.compress(text)
        assert r.text == "" and r.original_tokens == 0 and r.ratio == 1.0 and r.kept == ()
    assert c._counter is None and c._policy is None


def test_budget_at_or_above_the_original_returns_it_unchanged(word_compressor):
    r = word_compressor.compress("only four words here", target_tokens=10)
    assert r.text == "only four words here" and r.ratio == 1.0 and all(r.kept)


@pytest.mark.parametrize("kwargs, error, fragment", [
    (dict(rate=0), ValueError, r"rate=0 is outside \(0.0, 1.0\]"),
    (dict(rate=1.5), ValueError, "rate=1.5"),
    (dict(rate=float("nan")), ValueError, "finite"),
    (dict(rate="0.5"), ValueError, "rate='0.5'"),
    (dict(target_tokens=0), ValueError, "target_tokens=0 must be an integer >= 1"),
    (dict(target_tokens=2.5), ValueError, "target_tokens=2.5"),
    (dict(rate=0.5, target_tokens=10), ValueError, "one or the other"),
    (dict(query=3), TypeError, "query must be a str"),
    (dict(protect=[3]), TypeError, "protect="),
])
def test_bad_arguments_name_value_rule_and_fix(word_compressor, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        word_compressor.compress("some text to compress here", **kwargs)


@pytest.mark.parametrize("bad", [None, b"bytes", 42, ["a", "b"]])
def test_non_string_prompt_is_a_type_error_naming_it(word_compressor, bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        word_compressor.compress(bad)


def test_bad_config_and_unknown_policy():
    with pytest.raises(ValueError, match="unknown setting"):
        Compressor(nonsense=1)
    with pytest.raises(ValueError, match="unknown policy .magic.: valid policies are extractive, generative, graph"):
        Compressor(policy="magic")
    with pytest.raises(TypeError, match="CompressorConfig"):
        Compressor({"policy": "graph"})


def test_batch_matches_single_calls_and_checks_everything_first(word_compressor):
    texts = [r["question"] for r in read_jsonl("gsm8k/test.jsonl", limit=5)]
    batch = word_compressor.compress_batch(texts, rate=0.5, query=["How much?"] * 5)
    single = [word_compressor.compress(t, rate=0.5, query="How much?") for t in texts]
    assert [b.text for b in batch] == [s.text for s in single]
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        word_compressor.compress_batch(["ok", None])
    with pytest.raises(ValueError, match="one query per text"):
        word_compressor.compress_batch(["a", "b"], query=["q"])
    with pytest.raises(TypeError, match="list of strings"):
        word_compressor.compress_batch("not a list")


def test_a_failing_policy_returns_the_original_and_says_why(word_compressor):
    c = Compressor(tokenizer="words")

    class Broken:
        name = "broken"

        def score(self, words, *, query=None):
            raise RuntimeError("model exploded")

    c._policy = Broken()
    text = "nothing here may be lost even when the policy fails badly"
    # a trained policy that fails: the training-free graph policy compresses instead, and the result says why
    r = c.compress(text, rate=0.5)
    assert r.method == "graph" and "broken raised RuntimeError: model exploded" in r.fallback
    assert r.text == Compressor(policy="graph", tokenizer="words").compress(text, rate=0.5).text
    # when the graph fails too, the prompt comes back whole
    c._fallback_policy = Broken()
    c._fallback_policy.name = "graph"
    r = c.compress(text, rate=0.5)
    assert r.text == text and r.method == "none" and "model exploded" in r.fallback
    assert "uncompressed" in r.fallback


def test_a_bad_rewrite_falls_back_to_the_graph_policy():
    c = Compressor(tokenizer="words")

    class Inventive:
        name = "inventive"

        def rewrite(self, text, *, target_words, query=None):
            return "Here is the compressed prompt: 99 apples"

    c._policy = Inventive()
    r = c.compress("Tom has 3 apples and buys 4 more apples at the market today. How many now?", rate=0.5)
    assert r.method == "graph" and "numbers not in the original" in r.fallback
    assert "3" in r.text and "4" in r.text and "99" not in r.text


def test_a_good_rewrite_is_used_without_a_keep_mask():
    c = Compressor(tokenizer="words")

    class Terse:
        name = "terse"

        def rewrite(self, text, *, target_words, query=None):
            return "Tom: 3 apples + 4. Total?"

    c._policy = Terse()
    r = c.compress("Tom has 3 apples and buys 4 more apples at the market today. How many now?", rate=0.5)
    assert r.method == "terse" and r.kept is None and r.fallback is None


def test_save_and_load_roundtrip(tmp_path):
    c = Compressor(tokenizer="words", rate=0.4)
    c.save_pretrained(tmp_path / "ckpt")
    loaded = Compressor.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == c.config
    with pytest.raises(ValueError, match="not an rlpc checkpoint"):
        Compressor.from_pretrained(tmp_path)


def test_shared_instance_is_thread_safe():
    c = Compressor(tokenizer="words")
    texts = [r["question"] for r in read_jsonl("gsm8k/test.jsonl", limit=24)]
    expected = [Compressor(tokenizer="words").compress(t).text for t in texts]
    results = [None] * len(texts)

    def work(i):
        results[i] = c.compress(texts[i]).text

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def test_select_words_respects_budget_and_ties():
    scores = np.array([1.0, 3.0, 2.0, 3.0])
    keep = select_words(scores, np.array([True, False, False, False]), np.ones(4, dtype=np.int64), budget=2)
    assert keep.tolist() == [True, True, False, False]  # tie between words 1 and 3 goes to the earlier one


_word = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(words=st.lists(_word, min_size=1, max_size=120), seps=st.lists(st.sampled_from([" ", "  ", "\n", "\t"]), min_size=1),
       rate=st.floats(min_value=0.05, max_value=1.0))
def test_invariants_hold_for_any_text(word_compressor, words, seps, rate):
    text = "".join(w + seps[i % len(seps)] for i, w in enumerate(words))
    text = re.sub(r"</?(?:keep|question|instruction|demo|compress)>", "", text)
    r = word_compressor.compress(text, rate=rate)
    if not text.strip():
        assert r.text == ""
        return
    assert is_subsequence(r.text.split(), text.split())
    assert r.compressed_tokens <= r.original_tokens
    assert r.protected_ok


def test_a_1mb_prompt_compresses_with_bounded_memory():
    from training.evaluate import PeakRSS

    rows = read_jsonl("squad_v2_dev_subset/squad_v2_dev_first5articles.jsonl")
    contexts = list(dict.fromkeys(r["context"] for r in rows))
    parts, size, i = [], 0, 0
    while size < 1_000_000:
        parts.append(contexts[i % len(contexts)])
        size += len(parts[-1]) + 2
        i += 1
    text = "\n\n".join(parts)
    c = Compressor(tokenizer="words")
    c.compress(contexts[0], rate=0.3, query="warm-up")  # lazy imports (scipy for PageRank) are not the prompt's cost
    # The kernel's high-water mark of resident memory, reset before the call (no tracing: tracemalloc slows this
    # allocation-heavy code 5-10x); elsewhere than Linux it is the process's lifetime peak and can only over-report.
    with PeakRSS() as mem:
        r = c.compress(text, rate=0.3, query="Who ruled Normandy?")
    assert abs(r.ratio - 0.3) < 0.05 and r.protected_ok and r.budget_met
    # Seen here: tens of MB. One chunk's graph is alive at a time (networkx graphs hold reference cycles that the
    # cyclic GC frees in batches, so the peak depends on GC timing); a whole-prompt graph would need gigabytes.
    if mem.exact:
        assert mem.peak_mb * 1e6 < 150 * len(text), f"peak {mem.peak_mb:.0f} MB for a {len(text) / 1e6:.1f} MB prompt"


def test_tiktoken_budgets_when_available(monkeypatch):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is optional")
    import os

    try:
        import llama_index.core as li  # ships cl100k offline; users with the network need nothing
        monkeypatch.setenv("TIKTOKEN_CACHE_DIR", os.path.join(os.path.dirname(li.__file__), "_static", "tiktoken_cache"))
        tiktoken.get_encoding("cl100k_base")
    except Exception as err:  # noqa: BLE001 - any failure means the encoding cannot be had offline here
        pytest.skip(f"cl100k_base not available offline: {err}")
    from rlpc_core.tokens import TiktokenCounter
    from rlpc_core.words import split_words

    counter = TiktokenCounter("cl100k_base")
    text = "Janet’s ducks lay 16 eggs per day; naïve café prices rose 5% in 2023, said Zoë. " * 4
    assert counter.word_costs(split_words(text)).sum() == counter.count(text)
    r = Compressor(tokenizer="tiktoken:cl100k_base").compress(text, rate=0.5)
    assert r.tokenizer == "tiktoken:cl100k_base" and r.budget_met and "16" in r.text


def test_pickling_keeps_settings_and_drops_loaded_state():
    import pickle

    c = Compressor(tokenizer="words", rate=0.3)
    c.compress("warm the policy up before pickling it here")
    clone = pickle.loads(pickle.dumps(c))
    assert clone.config == c.config and clone._policy is None
    assert clone.compress("one two three four five six seven eight nine ten").text == \
        c.compress("one two three four five six seven eight nine ten").text


def test_a_saved_graph_compressor_loads_with_its_settings(tmp_path):
    Compressor(selection={"words_only": True}, rate=0.4).save_pretrained(tmp_path / "plain")
    c = Compressor.from_pretrained(tmp_path / "plain")
    assert c.config.selection.words_only and c.config.rate == 0.4 and c.config.policy == "graph"
    assert c.compress("Tom has 3 apples and buys 4 more at the market. How many apples now?").text
