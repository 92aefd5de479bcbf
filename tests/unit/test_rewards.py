"""Reward functions on plain lists, the registry, and build_rewards (trl's contract, without trl)."""

import doctest
import math
import re

import pytest

import rlpc_core.rewards as rewards_module
from rlpc_core.backends import Reply
from rlpc_core.evaluator import Evaluator
from rlpc_core.feedback import FeedbackModel
from rlpc_core.rewards import (REWARDS, build_rewards, completion_text, compression_score, coverage_score,
                               format_violations, get_reward, gold_target, reward_names, shared_evaluator)

BUILTIN = {"compression", "fidelity", "answer_agreement", "answer_likelihood", "protected_coverage", "format"}
ORIGINAL = "Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and sells the rest for $2 each."


def call(fn, completions, **columns):
    """Call a reward the way trl does: keyword arguments, plus trl's own extras that rewards must ignore."""
    return fn(prompts=["<policy prompt>"] * len(completions), completions=completions,
              completion_ids=[[1]] * len(completions), trainer_state=None, **columns)


def as_chat(texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_doctests():
    # the evaluator-backed examples run with cache=False: they never write to the user's cache
    assert doctest.testmod(rewards_module).failed == 0


# ---------------------------------------------------------------- registry

def test_registry_lists_the_builtin_rewards():
    assert BUILTIN <= set(reward_names()) and BUILTIN <= set(REWARDS)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        get_reward("compresion")
    msg = str(err.value)
    assert "'compresion'" in msg and "did you mean 'compression'" in msg and "dotted path" in msg
    for name in BUILTIN:
        assert name in msg


def test_unknown_setting_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['rate'\].*target_rate, tokenizer"):
        get_reward("compression", rate=0.5)


@pytest.mark.parametrize("sep", [":", "."])
def test_dotted_path_imports_a_reward_and_binds_settings(tmp_path, monkeypatch, sep):
    (tmp_path / "my_rewards.py").write_text(
        "def length_reward(prompts, completions, *, scale=1.0, **kwargs):\n"
        "    return [scale * len(c) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    fn = get_reward(f"my_rewards{sep}length_reward", scale=2.0)
    assert fn.__name__ == "length_reward"
    assert call(fn, ["ab", "abc"]) == [4.0, 6.0]
    with pytest.raises(ValueError, match="cannot import reward"):
        get_reward(f"my_rewards{sep}no_such_function")
    with pytest.raises(ValueError, match="cannot import reward"):
        get_reward("no_such_package.module:fn")


def test_register_reward_adds_a_name(monkeypatch):
    monkeypatch.setattr(rewards_module, "REWARDS", dict(REWARDS))

    @rewards_module.register_reward("always_one")
    def always_one_reward():
        def reward(prompts, completions, **kwargs):
            return [1.0] * len(completions)
        return reward

    assert "always_one" in reward_names()
    assert call(get_reward("always_one"), ["a", "b"]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="identifier"):
        rewards_module.register_reward("not a name")


def test_build_rewards_returns_named_functions_and_weights():
    funcs, weights = build_rewards([
        {"name": "compression", "weight": 2, "kwargs": {"target_rate": 0.4}},
        "format",
        {"name": "protected_coverage", "weight": 0.5},
        {"name": "compression", "kwargs": {"target_rate": 0.6}},
    ])
    assert [f.__name__ for f in funcs] == ["compression", "format", "protected_coverage", "compression_2"]
    assert weights == [2.0, 1.0, 0.5, 1.0] and all(type(w) is float for w in weights)
    assert funcs[0].target_rate == 0.4 and funcs[3].target_rate == 0.6
    assert all(callable(f) for f in funcs)


@pytest.mark.parametrize("specs, match", [
    ([], "at least one reward"),
    ({"name": "format"}, "list of"),
    ("format", "list of"),
    ([{"name": "format", "weigth": 1}], r"unknown key\(s\) \['weigth'\]"),
    ([{"name": "format", "weight": "high"}], "weight='high' must be a finite number"),
    ([{"name": "format", "weight": float("nan")}], "finite number"),
    ([{"name": "format", "kwargs": [1]}], "must be a mapping"),
    ([{"weight": 1}], "non-empty str"),
    ([3], "must be a name or a mapping"),
])
def test_build_rewards_rejects_bad_specs(specs, match):
    with pytest.raises(ValueError, match=match):
        build_rewards(specs)


def test_rewards_naming_one_evaluator_share_it(tmp_path):
    settings = {"model": "smollm2-135m-instruct", "cache": str(tmp_path / "e.sqlite")}
    funcs, _ = build_rewards([{"name": "answer_agreement", "kwargs": {"evaluator": settings}},
                              {"name": "answer_likelihood", "kwargs": {"evaluator": dict(settings), "task": "qa"}},
                              {"name": "answer_likelihood", "kwargs": {"evaluator": {**settings, "batch_size": 2}}}])
    assert funcs[0].evaluator is funcs[1].evaluator
    assert funcs[2].evaluator is not funcs[0].evaluator and funcs[2].evaluator.batch_size == 2
    ev = Evaluator(cache=False)
    assert shared_evaluator(ev) is ev  # an instance is used as given
    with pytest.raises(ValueError, match="unknown: \\['modle'\\]"):
        shared_evaluator({"modle": "x"})


# ---------------------------------------------------------------- completions and columns

def test_completion_text_handles_both_formats():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "chat"}]) == "chat"
    assert completion_text({"role": "assistant", "content": "parsed"}) == "parsed"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "multi"},
                                                              {"type": "image"}]}]) == "multi"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    with pytest.raises(TypeError, match="completion must be"):
        completion_text(42)


@pytest.mark.parametrize("name", ["compression", "format", "protected_coverage"])
def test_conversational_and_plain_completions_score_alike(name):
    fn = get_reward(name)
    texts = ["Janet 16 eggs, eats 3, sells rest $2.", "Here is the prompt: ducks.", ""]
    original = [ORIGINAL] * 3
    assert call(fn, as_chat(texts), original=original) == call(fn, texts, original=original)


@pytest.mark.parametrize("name", sorted(BUILTIN - {"fidelity", "answer_agreement", "answer_likelihood"}))
def test_missing_original_column_names_it_and_the_fix(name):
    with pytest.raises(ValueError) as err:
        call(get_reward(name), ["x"])
    assert "'original'" in str(err.value) and "dataset" in str(err.value)


def test_misaligned_column_is_an_error():
    with pytest.raises(ValueError, match="2 values for 1 completions"):
        call(get_reward("format"), ["x"], original=["a", "b"])


# ---------------------------------------------------------------- compression

def test_compression_shape():
    assert compression_score(0.5, 0.5) == 1.0
    assert compression_score(1.0, 0.5) == 0.0 and compression_score(0.0, 0.5) == 0.0
    assert compression_score(0.7, 0.4) == pytest.approx(0.5)
    assert compression_score(0.2, 0.4) == pytest.approx(0.5)
    assert compression_score(1.2, 0.5) == pytest.approx(-0.4)
    assert compression_score(10.0, 0.5) == -1.0
    # continuous: no cliffs, unlike the reference's piecewise r_comp
    xs = [i / 1000 for i in range(1501)]
    assert max(abs(compression_score(a, 0.4) - compression_score(b, 0.4)) for a, b in zip(xs, xs[1:])) < 0.01


def test_compression_reward_rows():
    seen = {}
    fn = get_reward("compression", target_rate=0.5)
    out = fn(prompts=["p"] * 5, completions=["a b", "a b c d", "a b c d e f", "", "x"],
             original=["a b c d"] * 4 + [""], log_metric=lambda name, value: seen.setdefault(name, value))
    assert out == [1.0, 0.0, -1.0, -1.0, None]  # at target, uncompressed, longer, empty, nothing to compress
    assert seen == {"compression_ratio": pytest.approx((0.5 + 1.0 + 1.5) / 3)}


def test_compression_counts_in_a_named_tokenizer():
    fn = get_reward("compression", tokenizer="smollm2-135m-instruct")
    assert fn.tokenizer == "smollm2-135m-instruct"
    score = call(fn, ["Janet ducks 16 eggs, eats 3, sells rest $2 each."], original=[ORIGINAL])[0]
    assert 0.0 < score < 1.0


@pytest.mark.parametrize("rate", [0, 1.0, 1.5, "0.5", True])
def test_compression_rejects_bad_targets(rate):
    with pytest.raises(ValueError, match="target_rate|rate"):
        get_reward("compression", target_rate=rate)


# ---------------------------------------------------------------- fidelity

def test_fidelity_with_the_bi_encoder():
    fn = get_reward("fidelity", model="all-minilm-l6-v2")
    assert isinstance(fn.feedback, FeedbackModel)
    good, bad, empty = call(fn, ["Janet's ducks lay 16 eggs a day; she eats 3, sells the rest at $2.",
                                 "The weather in Oslo was cold and windy.", ""], original=[ORIGINAL] * 3)
    assert good > bad + 0.3 and empty == 0.0
    assert all(isinstance(s, float) for s in (good, bad, empty))


# ---------------------------------------------------------------- protected coverage

def test_protected_coverage_counts_numbers_and_spans():
    assert coverage_score("no protected items here", "items") == 1.0
    assert coverage_score("Pay $1,000 by May 3.", "Pay 1000 by 3") == 1.0  # canonical number forms
    assert coverage_score("Pay $1,000 by May 3.", "Pay by May") == 0.0
    assert coverage_score("Buy twelve eggs and 2 pears.", "Buy 2 pears") == 0.5
    assert coverage_score("Ask <keep>Acme Corp</keep> first, then Bob.", "Ask Acme Corp", numbers=False) == 1.0
    assert coverage_score("Ask <keep>Acme Corp</keep> first, then Bob.", "Ask Acme", numbers=False) == 0.0
    code = "Run this:\n```\nx = 1\n```\nthen stop."
    assert coverage_score(code, "Run:\n```\nx = 1\n```", numbers=False) == 1.0
    assert coverage_score(code, "Run x", numbers=False, keep_code=False) == 1.0


def test_protected_coverage_reward_settings():
    fn = get_reward("protected_coverage", numbers=False, protect=["Acme Corp"], protect_regex=[r"REF-\d+"])
    out = call(fn, ["Acme Corp REF-12", "Acme REF-12", "nothing"],
               original=["Tell Acme Corp about REF-12 and REF-9 today."] * 3)
    assert out == [pytest.approx(2 / 3), pytest.approx(1 / 3), 0.0]
    with pytest.raises(re.error):
        get_reward("protected_coverage", protect_regex=["("])


# ---------------------------------------------------------------- format

@pytest.mark.parametrize("completion, broken", [
    ("Janet 16 eggs, eats 3, sells rest $2.", []),
    ("Here is the compressed prompt: Janet 16 eggs.", ["chatter"]),
    ("Sure! Janet 16 eggs.", ["chatter"]),
    ("Compressed prompt: Janet 16 eggs.", ["chatter"]),
    ('"Janet 16 eggs."', ["chatter"]),
    ("Janet 16 eggs. Let me know if you need more.", ["chatter"]),
    ("Janet 17 eggs.", ["invented_numbers"]),
    (ORIGINAL + " Extra.", ["not_shorter"]),
    ("", ["empty"]),
])
def test_format_violations(completion, broken):
    assert format_violations(ORIGINAL, completion) == broken


def test_format_does_not_blame_what_the_original_says():
    original = "Sure, here is my question: how many of the 16 eggs are left after eating 3 of them today?"
    assert format_violations(original, "Sure, how many of 16 eggs left after eating 3?") == []


def test_format_reward_scale():
    out = call(get_reward("format"), ["Janet 16 eggs.", "Sure! Janet 17 eggs.",
                                      "Sure! " + ORIGINAL + " 99", ""], original=[ORIGINAL] * 4)
    assert out == [1.0, 0.0, -0.5, -1.0]


# ---------------------------------------------------------------- evaluator-backed rewards (fake model, real plumbing)

class FakeBackend:
    """Answers with the first number of the problem; likelihood = minus the share of target words missing."""

    identity, description = "fake", "fake reader"

    def __init__(self):
        self.generated, self.scored = [], []

    def generate(self, prompts, *, max_new_tokens, stop=()):
        self.generated += prompts
        for i, p in enumerate(prompts):
            body = p.split("Problem: ", 1)[-1] if "Problem: " in p else p.split("Context: ", 1)[-1].split("\n\n")[0]
            nums = re.findall(r"\d+", body)
            yield i, Reply(f"Thinking...\n#### {nums[0]}" if "Problem: " in p else (body.split()[0] if body else ""))

    def loglikelihood(self, pairs):
        self.scored += pairs
        return ((i, -sum(w not in p for w in t.split()) / len(t.split())) for i, (p, t) in enumerate(pairs))


class FakeEvaluator(Evaluator):
    """The real Evaluator (prompts, cache, extraction) over :class:`FakeBackend`."""

    def __init__(self, path):
        super().__init__(cache=path)
        self.backend = FakeBackend()

    @property
    def generated(self):
        return self.backend.generated

    @property
    def scored(self):
        return self.backend.scored


def test_answer_agreement_with_and_without_gold(tmp_path):
    ev = FakeEvaluator(tmp_path / "fake.sqlite")
    fn = get_reward("answer_agreement", evaluator=ev, task="math")
    original = "Tom has 5 apples and 3 pears. How many fruits?"
    completions = ["Tom 5 apples, 3 pears. Fruits?", "Tom 3 pears?", "", "Tom 5 apples 3 pears"]
    assert call(fn, completions, original=[original] * 4) == [1.0, 0.0, 0.0, 1.0]
    # the original was answered once (four rows share it); the empty completion was never sent
    assert sum(original in p for p in ev.generated) == 1 and len(ev.generated) == 4
    ev.generated.clear()
    with_gold = call(fn, completions, original=[original] * 4, answer=["5 + 3 = <<5+3=8>>8\n#### 8"] * 4)
    assert with_gold == [0.5, 0.0, 0.0, 0.5]  # agree with the original, both wrong against gold 8
    assert ev.generated == []  # everything came from the cache
    assert call(fn, completions[:1], original=[original], answer=["#### 5"]) == [1.0]
    assert call(get_reward("answer_agreement", evaluator=ev, agreement_weight=1.0), completions[:1],
                original=[original], answer=["#### 8"]) == [1.0]


def test_answer_agreement_qa_rows_need_the_question(tmp_path):
    ev = FakeEvaluator(tmp_path / "fake.sqlite")
    fn = get_reward("answer_agreement", evaluator=ev, task="qa")
    original = "Paris is the capital of France."
    out = call(fn, ["Paris capital France", "capital France"], original=[original] * 2,
               question=["What is the capital of France?"] * 2, answer=[["Paris", "paris"]] * 2)
    assert out == [1.0, 0.0]
    with pytest.raises(ValueError, match="'question'"):
        call(fn, ["Paris"], original=[original])
    mixed = call(get_reward("answer_agreement", evaluator=ev, task="math"), ["Paris capital", "Tom 5"],
                 original=[original, "Tom has 5 apples."], question=["Capital?", None], task=["qa", "math"])
    assert mixed == [1.0, 1.0]


def test_answer_likelihood_relative_to_the_original(tmp_path):
    ev = FakeEvaluator(tmp_path / "fake.sqlite")
    fn = get_reward("answer_likelihood", evaluator=ev, task="qa")
    original = "Rollo led the Normans from Normandy in France"
    out = call(fn, ["Rollo led Normans", "Normans from France", ""], original=[original] * 3,
               question=["Who led the Normans?"] * 3, answer=[["Rollo led"], ["Rollo led"], ["Rollo led"]])
    # fake ll: 0 when every gold word is in the prompt, -0.5 when one of two is missing
    assert out == [1.0, pytest.approx(math.exp(-0.5)), 0.0]
    assert call(fn, ["x"], original=["y"], question=["q"], answer=[[]]) == [None]  # unanswerable: no gold
    with pytest.raises(ValueError, match="'answer'"):
        call(fn, ["x"], original=["y"], question=["q"])
    scored = len(ev.scored)
    call(fn, ["Rollo led Normans"], original=[original], question=["Who led the Normans?"], answer=[["Rollo led"]])
    assert len(ev.scored) == scored  # both likelihoods cached


def test_gold_target_cleans_gsm8k_solutions():
    solution = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18"
    assert gold_target("math", solution) == "Janet sells 16 - 3 - 4 = 9 duck eggs.\nShe makes 9 * 2 = $18.\n#### 18"
    assert gold_target("qa", ["", "Paris"]) == "Paris" and gold_target("qa", "Rome") == "Rome"
    assert gold_target("qa", []) is None and gold_target("math", None) is None


def test_answer_likelihood_with_smollm2_prefers_keeping_the_answer(tmp_path):
    fn = get_reward("answer_likelihood", task="math",
                    evaluator={"model": "smollm2-135m-instruct", "cache": str(tmp_path / "ll.sqlite")})
    original = "Tom has 5 apples. He buys 3 more apples. How many apples does Tom have now?"
    gold = "Tom has 5 + 3 = <<5+3=8>>8 apples.\n#### 8"
    kept, dropped = call(fn, ["Tom has 5 apples, buys 3 more. How many now?", "Tom buys apples. How many now?"],
                         original=[original] * 2, answer=[gold] * 2)
    assert 0.0 <= dropped < kept <= 1.0


# ---------------------------------------------------------------- one rule book for training and inference

@pytest.mark.parametrize("rewrite", [
    "Janet 16 eggs, eats 3, sells rest $2.",
    "Of course! Janet 16 eggs, eats 3, sells rest $2.",
    "Janet 16 eggs, eats 3, sells rest $2. Let me know if you need more.",
    "Janet 17 eggs, eats 3, sells rest $2.",
    ORIGINAL + " Extra words here.",
])
def test_the_format_reward_and_the_inference_guard_judge_rewrites_alike(rewrite):
    """A rewrite the reward finds clean is one the compressor uses; one it penalises, the compressor refuses."""
    from rlpc_core import Compressor

    c = Compressor(tokenizer="words")

    class Fixed:  # a rewriting policy that answers with this exact rewrite
        name = "fixed"

        def rewrite(self, text, *, target_words, query=None):
            return rewrite

    c._policy = Fixed()
    used = c.compress(ORIGINAL, rate=0.9).fallback is None
    assert used == (format_violations(ORIGINAL, rewrite) == []), (rewrite, format_violations(ORIGINAL, rewrite))
