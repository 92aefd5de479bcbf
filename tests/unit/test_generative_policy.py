"""The rewriting policy: prompt building, output cleaning, guards, and loading (tiny Phi-3 / Llama, LoRA)."""

import pytest

from rlpc_core import Compressor, GenerativeConfig
from rlpc_core.policies.generative import clean_rewrite, hint_words, policy_messages
from tiny_models import make_tiny

QUESTION = ("Tom has 3 boxes with 12 apples in each box. He gives away half of the apples to his neighbours. "
            "How many apples does Tom keep?")


@pytest.fixture(scope="module")
def tiny_phi3(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("phi3"), "phi3")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("llama"), "llama")


@pytest.mark.parametrize("raw, clean", [
    ("Here is the compressed prompt:\nTom: 3 boxes x 12 apples.", "Tom: 3 boxes x 12 apples."),
    ("Sure! Here's the shortened text:\n\"Tom: 3 boxes.\"", "Tom: 3 boxes."),
    ("Compressed: Tom 3 boxes", "Tom 3 boxes"),
    ("```\nTom 3 boxes\n```", "Tom 3 boxes"),
    ("Tom @@3@@ boxes", "Tom 3 boxes"),
    ("Here the apples are shared.", "Here the apples are shared."),  # "Here" that is content stays
])
def test_chatter_and_wrapping_are_stripped(raw, clean):
    assert clean_rewrite(raw) == clean


def test_prompt_carries_budget_question_and_hints():
    msgs = policy_messages(QUESTION, target_words=12, query="How many apples?")
    assert msgs[0]["role"] == "system" and "Output only" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert "at most 12 words" in user and QUESTION in user and "How many apples?" in user
    hints = hint_words(QUESTION, GenerativeConfig(), query="How many apples?")
    assert {"3", "12", "half"} <= set(hints) and f"Important words: {', '.join(hints)}" in user
    assert "Important" not in policy_messages(QUESTION, target_words=12, config=GenerativeConfig(hints="none"))[1]["content"]
    marked = policy_messages(QUESTION, target_words=12, config=GenerativeConfig(hints="markers"))[1]["content"]
    assert "@@3@@" in marked and "Important words" not in marked


def test_bad_generative_settings():
    with pytest.raises(ValueError, match="hints='bold'"):
        GenerativeConfig(hints="bold")
    with pytest.raises(ValueError, match="unknown generative setting"):
        Compressor(generative={"temperature": 1.0})


@pytest.mark.parametrize("arch", ["phi3", "llama"])
def test_random_tiny_models_run_and_unusable_rewrites_fall_back(arch, tiny_phi3, tiny_llama):
    folder = tiny_phi3 if arch == "phi3" else tiny_llama
    c = Compressor(policy="generative", tokenizer="words", generative={"model": str(folder)})
    r = c.compress(QUESTION, rate=0.5)
    # a random model writes gibberish: the compressor must notice, fall back to the graph and say so
    assert r.method == "graph" and r.fallback and r.protected_ok
    assert all(n in r.text for n in ("3", "12"))


def test_lora_checkpoint_loads_through_from_pretrained(tiny_llama, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    ckpt = tmp_path / "ckpt"
    peft_model.save_pretrained(ckpt)
    Compressor(policy="generative", tokenizer="words", generative={"model": str(tiny_llama)}).save_pretrained(ckpt)
    loaded = Compressor.from_pretrained(ckpt)
    assert loaded.config.policy == "generative"
    r = loaded.compress(QUESTION, rate=0.5)
    assert r.protected_ok and (r.method == "generative" or r.fallback)
    assert type(loaded.policy._load()[0]).__name__ == "LlamaForCausalLM"  # merged: no peft wrapper at inference


def test_real_smollm2_rewrites_or_falls_back_safely():
    c = Compressor(policy="generative")
    r = c.compress(QUESTION, rate=0.6)
    assert r.protected_ok and r.compressed_tokens <= r.original_tokens
    if r.method == "generative":
        assert r.kept is None and r.fallback is None
    else:
        assert r.fallback
