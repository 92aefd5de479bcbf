"""Training: recipes, the fidelity constraint, SFT bootstrapping, and SFT -> GRPO end to end on the phi3-gsm8k
recipe's code path with tiny randomly initialised Phi-3 (policy) and Llama (evaluator) models; resume after
SIGKILL; two processes under accelerate launch."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_models import make_tiny
from training.checkpoints import MARKER, checkpoints, is_complete, latest_complete, remove_incomplete, rotate
from training.constraint import FidelityConstraint
from training.recipe import RecipeError, load_recipe, recipe_from_args

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _need_gsm8k_train():
    from training.data import default_data_dir

    if not (default_data_dir() / "gsm8k" / "train.jsonl").is_file():
        pytest.skip("GSM8K train not found beside the repo (../shared/data): the shared data sits there only on the "
                    "project's machines")


# ---------------------------------------------------------------- recipes

def test_recipes_load_with_their_documented_settings():
    smol = load_recipe("smollm2-cpu-gsm8k")
    assert smol.policy.model == "smollm2-135m-instruct" and smol.data.split == "train"
    assert smol.grpo.num_generations == 4 and smol.grpo.beta == 0.001 and smol.grpo.use_cpu
    assert smol.grpo.max_steps == 36 and smol.sft.num_train_epochs == 1 and smol.warmup.bootstrap_rows == 120
    assert {r.name for r in smol.rewards} >= {"compression", "protected_coverage", "format", "fidelity",
                                               "answer_likelihood"}
    # the CPU recipe's target is in the proxy's units (calibrated on the graph policy, see the recipe)
    assert smol.constraint.reward == "answer_likelihood" and smol.constraint.target == 0.85
    phi3 = load_recipe("phi3-gsm8k")
    assert phi3.policy.model == "microsoft/Phi-3-mini-4k-instruct"
    assert (phi3.policy.lora.r, phi3.policy.lora.alpha) == (64, 128)
    assert phi3.policy.lora.target_modules == ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")
    assert phi3.evaluator.model == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert phi3.feedback.model == "cross-encoder/ms-marco-MiniLM-L-6-v2"
    assert phi3.grpo.learning_rate == 5e-6 and phi3.grpo.bf16 and phi3.grpo.num_generations == 4
    assert {"answer_agreement", "answer_likelihood"} <= {r.name for r in phi3.rewards}
    # the recipe is its own source of truth: a dump loads back to the same recipe
    from training.recipe import parse_yaml

    assert load_recipe(data=parse_yaml(phi3.to_yaml())) == phi3


def test_recipe_fills_reward_defaults_from_its_sections():
    specs = {s["name"]: s for s in load_recipe("smollm2-cpu-gsm8k").reward_specs("cpu")}
    assert specs["compression"]["kwargs"]["target_rate"] == 0.5
    assert specs["answer_likelihood"]["kwargs"]["evaluator"]["model"] == "smollm2-135m-instruct"
    assert specs["answer_likelihood"]["kwargs"]["evaluator"]["device"] == "cpu"
    assert specs["fidelity"]["kwargs"]["model"]["model"] == "all-minilm-l6-v2"


def test_overrides_dotted_keys_list_items_and_flags():
    r = load_recipe("smollm2-cpu-gsm8k", ["grpo.learning_rate=1e-5", "rewards.fidelity.weight=2",
                                          "rewards.0.kwargs.tokenizer=smollm2-135m-instruct",
                                          "policy.lora.target_modules=[q_proj, v_proj]", "data.limit=null"])
    assert r.grpo.learning_rate == 1e-5 and isinstance(r.grpo.learning_rate, float)
    assert [x.weight for x in r.rewards if x.name == "fidelity"] == [2.0]
    assert r.rewards[0].kwargs["tokenizer"] == "smollm2-135m-instruct"
    assert r.policy.lora.target_modules == ("q_proj", "v_proj") and r.data.limit is None
    import argparse

    args = argparse.Namespace(recipe="smollm2-cpu-gsm8k", overrides=["grpo.max_steps=9"], seed=7, max_steps=3,
                              policy="generative")
    r = recipe_from_args(args, "grpo")
    assert (r.seed, r.grpo.max_steps, r.data_seed) == (7, 3, 7)  # a trl flag given wins over --set and the recipe
    assert recipe_from_args(args, "sft").sft.max_steps == 3


def test_the_command_line_is_trls_own_parser_with_every_field_and_its_help(capsys):
    """--help lists every GRPOConfig / SFTConfig field (transformers' HfArgumentParser, trl's help text); a trl flag
    given overrides the recipe, one not given leaves the recipe's value (not trl's default)."""
    import dataclasses

    from training.recipe import trl_class, training_parser

    for stage in ("grpo", "sft"):
        parser = training_parser(stage, prog=f"python -m training.{stage}", description="x.")
        with pytest.raises(SystemExit):
            parser.parse_args(["--help"])
        text = capsys.readouterr().out
        fields = [f.name for f in dataclasses.fields(trl_class(stage)) if f.init]
        assert len(fields) > 100 and [f for f in fields if f"--{f}" not in text] == []
        assert "--recipe" in text and "--out" in text
    assert "Number of generations to sample" in training_parser("grpo", prog="p", description="x.").format_help()
    parser = training_parser("grpo", prog="p", description="x.")
    args = parser.parse_args(["--recipe", "minilm-extractive", "--learning_rate", "1e-5", "--out", "o"])
    r = recipe_from_args(args, "grpo")
    assert r.grpo.learning_rate == 1e-5 and r.grpo.num_generations == 8  # the recipe's 8, not trl's default
    assert r.grpo.build("o", seed=r.seed).num_iterations == 2  # trl's own object, with the recipe's values
    with pytest.raises(RecipeError, match="pass it as --out"):
        recipe_from_args(parser.parse_args(["--recipe", "minilm-extractive", "--output_dir", "x", "--out", "o"]),
                         "grpo")


@pytest.mark.parametrize("override, message", [
    ("grpo.lerning_rate=1e-5", "unknown recipe key 'grpo.lerning_rate' (did you mean 'learning_rate'?)"),
    ("data.split=test", "data.split='test' is held-out data"),
    ("grpo.num_generations=1", "grpo: GRPO requires at least 2 generations per prompt"),  # trl's own check
    ("grpo.per_device_train_batch_size=6", "generation_batch_size (6) must be divisible by num_generations (4)"),
    ("grpo.lr_scheduler_type=cosin", "cosin is not a valid SchedulerType"),
    ("grpo.seed=3", "grpo.seed=3 is set by the run, not the recipe; use the recipe's top-level seed"),
    ("grpo.steps=3", "recipe key 'grpo.steps' is now grpo.max_steps; rename it"),
    ("sft.bootstrap_rows=3", "recipe key 'sft.bootstrap_rows' is now warmup.bootstrap_rows"),
    ("extractive.clip_epsilon=0.1", "recipe key 'extractive.clip_epsilon' is now grpo.epsilon"),
    ("grpo.scale_rewards=groups", "grpo.scale_rewards='groups' must be one of group, batch, none"),
    ("grpo.learning_rate=fast", "grpo.learning_rate='fast' must be a finite number"),
    ("constraint.reward=answer_agreement", "constraint.reward='answer_agreement' is not among the recipe's rewards"),
    ("rewards.1.name=protected_coverag", "rewards[1].name='protected_coverag' is not a registered reward (did you "
                                         "mean 'protected_coverage'?)"),
    ("grpo.bf16=true", "grpo.bf16=True with use_cpu"),
    ("grpo.trl_args={beta: 0.1}", "recipe key 'grpo.trl_args' is now grpo itself"),
    ("policy.hints=bold", "policy: hints='bold' must be one of"),
    ("policy.lora.target_modules=[]", "policy.lora.target_modules=[] must name at least one module"),
    ("target_rate=1.0", "target_rate=1.0 must be below 1"),
    ("grpo.max_steps", "--set 'grpo.max_steps' is not key=value"),
    ("compressor={selection: {max_word_dorp: 0.2}}", "compressor={'selection': {'max_word_dorp': 0.2}} is not a valid "
                                                     "CompressorConfig (unknown selection setting(s) ['max_word_dorp']"),
    ("compressor={rate: 0.3}", "compressor.rate=0.3 is the recipe's target_rate"),
])
def test_invalid_values_name_the_value_the_rule_and_the_fix(override, message):
    with pytest.raises(RecipeError) as err:
        load_recipe("smollm2-cpu-gsm8k", [override])
    assert message in str(err.value)
    assert ";" in str(err.value) or ":" in str(err.value)  # ...followed by the fix or the valid choices


def test_the_recipe_embeds_the_compressor_it_trains(tmp_path):
    from rlpc_core import Compressor
    from training.common import save_compressor

    recipe = load_recipe("minilm-extractive", ["compressor={selection: {max_word_drop: 0.2}, keep_code: false}"])
    config = recipe.compressor_config()
    assert (config.policy, config.rate, config.selection.max_word_drop, config.keep_code) == (
        "extractive", recipe.target_rate, 0.2, False)
    saved = Compressor.from_pretrained(save_compressor(tmp_path, recipe)).config
    assert saved == config  # the checkpoint runs with what training used
    # and without the section, rlpc's defaults (the generative recipe's settings come from its policy section)
    gen = load_recipe("smollm2-cpu-gsm8k").compressor_config()
    assert gen.policy == "generative" and gen.selection == Compressor().config.selection
    assert gen.generative.model == load_recipe("smollm2-cpu-gsm8k").policy.model


def test_unknown_recipe_name_lists_the_known_ones():
    with pytest.raises(RecipeError, match="smollm2-cpu-gsm8k"):
        load_recipe("no-such-recipe")


# ---------------------------------------------------------------- the fidelity constraint

def _const(value):
    return lambda prompts, completions, **kw: [value] * len(completions)


def test_lambda_rises_below_target_and_never_goes_negative():
    c = FidelityConstraint(_const(0.5), target=0.97, eta=0.5, window=1)
    lams = [c.update(0.5) for _ in range(4)]
    assert lams == sorted(lams) and lams[0] == pytest.approx(0.235) and lams[-1] == pytest.approx(4 * 0.235)
    assert c.weight == pytest.approx(1 + 4 * 0.235)
    down = [c.update(1.0) for _ in range(100)]
    assert down == sorted(down, reverse=True) and down[-1] == 0.0 and min(down) >= 0.0
    assert c.weight == 1.0  # a satisfied constraint leaves the recipe's weight


def test_lambda_is_capped_averaged_over_its_window_and_skips_missing_values():
    c = FidelityConstraint(_const(0.0), target=0.9, eta=10.0, lambda_max=2.0, window=2)
    assert c.update(0.0) == 2.0  # capped
    c = FidelityConstraint(_const(0.0), target=0.9, eta=1.0, window=2)
    c.update(0.8)
    assert c.update(1.0) == pytest.approx(0.1 + (0.9 - 0.9))  # second step sees the mean of 0.8 and 1.0
    before = c.lam
    assert c.update(float("nan")) == before and c.update(None) == before


def test_constraint_wraps_a_reward_in_trls_contract():
    set_weights, metrics = [], {}
    base = _const(0.5)
    base.__name__ = "answer_likelihood"
    c = FidelityConstraint(base, target=0.97, eta=1.0, window=1, base_weight=2.0)
    c.bind(set_weights.append)
    out = c(["p"] * 3, ["a", "b", "c"], log_metric=lambda k, v: metrics.setdefault(k, v))
    assert out == [0.5] * 3 and c.__name__ == "answer_likelihood"  # values unchanged; trl logs the raw mean
    # the batch is weighted with the lambda from before it (0); the update is applied from the next batch on
    assert set_weights == [2.0, 2.0] and metrics["constraint/lambda"] == 0.0
    assert c.lam == pytest.approx(0.47) and c.weight == pytest.approx(2.0 * 1.47)
    state = c.state_dict()
    d = FidelityConstraint(base, target=0.97, eta=1.0, window=1, base_weight=2.0)
    d.load_state_dict(json.loads(json.dumps(state)))
    assert d.lam == c.lam and list(d.recent) == list(c.recent)


def test_constraint_ignores_rows_without_a_value():
    c = FidelityConstraint(lambda prompts, completions, **kw: [None, 1.0, math.nan], target=0.5, eta=1.0, window=1)
    c(["p"] * 3, ["a", "b", "c"])
    assert c.observed == 1.0 and c.lam == 0.0


@pytest.mark.parametrize("kwargs, message", [
    ({"target": 1.5}, "target=1.5"), ({"eta": 0}, "eta=0"), ({"window": 0}, "window=0"),
    ({"lambda_init": -1.0}, "lambda_init=-1.0"),
])
def test_constraint_settings_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FidelityConstraint(_const(1.0), **kwargs)


# ---------------------------------------------------------------- checkpoints

def test_only_marked_checkpoints_count_and_incomplete_ones_are_removed(tmp_path):
    for step, complete in ((1, True), (2, True), (3, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "trainer_state.json").write_text("{}")
        if complete:
            (folder / MARKER).write_text("complete\n")
    assert latest_complete(tmp_path).name == "checkpoint-2" and not is_complete(tmp_path / "checkpoint-3")
    assert [p.name for p in remove_incomplete(tmp_path)] == ["checkpoint-3"]
    assert [p.name for p in rotate(tmp_path, 1)] == ["checkpoint-1"]
    assert [p.name for p in checkpoints(tmp_path)] == ["checkpoint-2"]


# ---------------------------------------------------------------- SFT pairs

def _example(i, text):
    from training.data import Example

    return Example(id=f"x{i}", task="math", text=text, question=None, answers=("18",), solution="... #### 18")


def test_bootstrap_keeps_only_pairs_whose_rewards_are_high():
    from training.sft import bootstrap_pairs

    text = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
            "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per egg.")
    good = "Ducks lay 16 eggs/day. She eats three, bakes with four, sells the rest at $2 per egg."
    candidates = [good,
                  "Ducks lay eggs daily. She eats three, bakes with four, sells the rest for money each day.",  # no 16
                  text,  # not compressed
                  "Here is the compressed prompt: ducks lay 16 eggs, eats three, bakes four, sells at $2."]  # chatter
    kept, stats = bootstrap_pairs(load_recipe("smollm2-cpu-gsm8k"), [_example(i, text) for i in range(4)], candidates)
    assert [p["compressed"] for p in kept] == [good]
    assert kept[0]["scores"]["protected_coverage"] == 1.0 and kept[0]["scores"]["compression"] >= 0.8
    assert stats["candidates"] == 4 and stats["kept"] == 1
    assert set(stats["dropped_reasons"]) == {"lost a protected item", "compression reward < 0.8", "format"}


def test_bootstrap_from_gsm8k_train_with_the_graph_policy():
    _need_gsm8k_train()
    from training.sft import bootstrap_pairs

    recipe = load_recipe("smollm2-cpu-gsm8k", ["warmup.bootstrap_rows=20"])
    kept, stats = bootstrap_pairs(recipe)
    assert stats["candidates"] == 20 and 0 < stats["kept"] <= 20
    assert all(p["scores"]["protected_coverage"] == 1.0 and p["scores"]["compression"] >= 0.8 for p in kept)
    train_ids = {p["id"] for p in kept}
    assert all(i.startswith("gsm8k-train-") for i in train_ids)  # never a test question


def test_training_prompts_ask_for_the_budget_the_compressor_asks_for():
    """The policy's prompt in training names the word budget the Compressor will name at inference."""
    from rlpc_core import Compressor, register_policy
    from training.common import PromptBuilder

    asked = []

    class Capture:
        name = "capture"

        def __init__(self, config, **kwargs):
            pass

        def rewrite(self, text, *, target_words, query=None):
            asked.append(target_words)
            return text  # rejected (not shorter): the compressor falls back, which is fine here

    register_policy("capture", Capture)
    builder = PromptBuilder(load_recipe("smollm2-cpu-gsm8k"))
    texts = ["Tom has 3 boxes with 12 apples in each box. He gives away half of the apples. How many are left?",
             "A train leaves at 9:45 and travels 120 km at 80 km/h; a second one leaves 15 minutes later " * 3]
    for text in texts:
        Compressor(policy="capture").compress(text, rate=0.5)
        assert asked[-1] == builder.target_words(text)
        assert f"at most {asked[-1]} words" in builder.messages(text)[1]["content"]


def test_rewards_score_the_cleaned_rewrite_except_format():
    from training.grpo import on_clean_text

    seen = []

    def reward(prompts, completions, **kwargs):
        seen.extend(completions)
        return [1.0] * len(completions)

    reward.__name__ = "compression"
    reward.task = "math"
    wrapped = on_clean_text(reward)
    assert wrapped.__name__ == "compression" and wrapped.task == "math"
    wrapped(["p"], [[{"role": "assistant", "content": "Here is the compressed prompt:\nTom: 3 boxes x 12."}]])
    assert seen == ["Tom: 3 boxes x 12."]


def test_trl_rewards_prefetch_the_readers_work_for_the_cleaned_rewrite(tmp_path):
    """Under trl the first reward of a batch computes what every reward will ask the reader, about the rewrite
    the Compressor would use; the rewards then find it cached."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'rlpc[reader]'; CI installs it)")
    from rlpc_core.evaluator import EvalCache
    from rlpc_core.rewards import get_reward
    from training.grpo import on_clean_text, prefetching

    reader = {"model": "llamacpp:smollm2-135m-instruct", "n_ctx": 1024, "threads": 2,
              "cache": str(tmp_path / "r.sqlite")}
    funcs = prefetching([on_clean_text(get_reward("compression", target_rate=0.5)),
                         on_clean_text(get_reward("answer_likelihood", evaluator=reader, task="qa")),
                         on_clean_text(get_reward("reader_accuracy", evaluator=reader, task="qa", max_new_tokens=6))])
    assert [f.__name__ for f in funcs] == ["compression", "answer_likelihood", "reader_accuracy"]
    original = "The Eiffel Tower is in Paris. It was finished in 1889."
    batch = dict(original=[original], question=["In which city is the Eiffel Tower?"], answer=[["Paris"]])
    completions = [[{"role": "assistant", "content": "Here is the compressed prompt:\nEiffel Tower: Paris."}]]
    assert funcs[1].reader_requests(["p"], completions, **batch)[1].prompt.count("Here is") == 0
    funcs[0](["p"], completions, **batch)  # trl calls the first reward first
    cache = EvalCache(tmp_path / "r.sqlite")
    assert len(cache) == 3  # the original's and the rewrite's likelihoods, the rewrite's reply
    scores = [fn(["p"], completions, **batch) for fn in funcs[1:]]
    assert len(cache) == 3 and all(0.0 <= s[0] <= 1.0 for s in scores)
    plain = on_clean_text(get_reward("compression", target_rate=0.5))
    assert prefetching([plain]) == [plain]  # no reader reward: nothing wrapped


def test_user_pairs_are_checked(tmp_path):
    from training.common import TrainingError
    from training.sft import read_pairs

    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"original": "a b c d", "compressed": "a c"}) + "\n"
                    + json.dumps({"original": "a b", "question": "q?"}) + "\n")
    with pytest.raises(TrainingError, match=r"pairs.jsonl:2 needs a non-empty string 'compressed'"):
        read_pairs(path)


# ---------------------------------------------------------------- end to end on tiny models

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _need_gsm8k_train()
    root = tmp_path_factory.mktemp("tiny")
    return {"phi3": make_tiny(root / "phi3", "phi3"), "llama": make_tiny(root / "llama", "llama"),
            "cache": root / "evaluator.sqlite"}


def tiny_overrides(tiny) -> list[str]:
    """The phi3-gsm8k recipe with tiny models of the same architectures, on a CPU, in seconds."""
    sets = [f"policy.model={tiny['phi3']}", "policy.dtype=float32", f"evaluator.model={tiny['llama']}",
            "evaluator.dtype=float32", "evaluator.max_new_tokens=8", f"evaluator.cache={tiny['cache']}",
            "feedback.model=all-minilm-l6-v2", "grpo.bf16=false", "grpo.use_cpu=true",
            "grpo.gradient_checkpointing=false", "grpo.per_device_train_batch_size=4",
            "grpo.gradient_accumulation_steps=1",
            "grpo.max_completion_length=8", "grpo.save_steps=1", "grpo.logging_steps=1", "data.limit=8",
            "sft.bf16=false", "sft.use_cpu=true", "sft.gradient_checkpointing=false", "warmup.bootstrap_rows=12",
            "sft.per_device_train_batch_size=2"]
    return ["--recipe", "phi3-gsm8k"] + [x for s in sets for x in ("--set", s)]


@pytest.fixture(scope="module")
def sft_run(tiny, tmp_path_factory):
    from training import sft

    out = tmp_path_factory.mktemp("runs") / "sft"
    assert sft.main(tiny_overrides(tiny) + ["--max-steps", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def grpo_args(tiny, sft_run):
    return tiny_overrides(tiny) + ["--init", str(sft_run), "--max-steps", "3"]


@pytest.fixture(scope="module")
def grpo_run(grpo_args, tmp_path_factory):
    from training import grpo

    out = tmp_path_factory.mktemp("runs") / "grpo"
    assert grpo.main(grpo_args + ["--out", str(out)]) == 0
    return out


def test_sft_writes_an_adapter_that_from_pretrained_loads(sft_run):
    from rlpc_core import Compressor

    assert (sft_run / "adapter_model.safetensors").is_file() and (sft_run / "rlpc.json").is_file()
    pairs = [json.loads(line) for line in (sft_run / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["scores"]["protected_coverage"] == 1.0 for p in pairs)
    summary = json.loads((sft_run / "sft_summary.json").read_text())
    assert summary["steps"] == 2 and summary["pairs"]["kept"] == len(pairs)
    compressor = Compressor.from_pretrained(sft_run)
    assert compressor.config.policy == "generative" and compressor.config.generative.hints == "list"
    r = compressor.compress("Tom has 3 boxes with 12 apples in each box. How many apples does Tom have?", rate=0.5)
    assert r.protected_ok and (r.method == "generative" or r.fallback)  # a random tiny model falls back, and says so
    assert type(compressor.policy._load()[0]).__name__ == "Phi3ForCausalLM"


def test_grpo_end_to_end_writes_logs_curves_card_and_a_loadable_compressor(grpo_run, sft_run):
    from rlpc_core import Compressor

    rows = [json.loads(line) for line in (grpo_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    names = {"compression", "protected_coverage", "format", "fidelity", "answer_agreement", "answer_likelihood"}
    for r in rows:
        assert set(r["rewards"]) == names and all(v is not None for v in r["rewards"].values())
        assert r["reward"] is not None and r["kl"] is not None and r["lambda"] is not None
    assert rows[0]["lambda"] == 0.0 and rows[-1]["lambda"] > 0  # a tiny model's agreement is far below 0.97
    assert (grpo_run / "reward_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (grpo_run / "README.md").read_text()
    assert str(sft_run) in card and "phi3" in card and "| seed | 0 |" in card
    assert "## Held-out results" in card and "Not measured yet" in card and "python -m training.evaluate" in card
    assert "answer_agreement" in card and "qkv_proj" in card  # the recipe is embedded
    summary = json.loads((grpo_run / "training_summary.json").read_text())
    assert summary["steps_done"] == 3 and summary["init"] == str(sft_run)
    assert all(is_complete(p) for p in checkpoints(grpo_run)) and not (grpo_run / "ref").exists()
    compressor = Compressor.from_pretrained(grpo_run)
    r = compressor.compress("Tom has 3 boxes with 12 apples in each box. How many apples does Tom have?", rate=0.5)
    assert r.protected_ok


def test_init_must_be_an_adapter_of_the_recipes_base_model(sft_run):
    from training.common import TrainingError, check_init

    with pytest.raises(TrainingError, match="--set policy.model="):
        check_init(sft_run, load_recipe("smollm2-cpu-gsm8k"))
    with pytest.raises(TrainingError, match="holds no LoRA adapter"):
        check_init(sft_run.parent, load_recipe("smollm2-cpu-gsm8k"))


def test_grpo_refuses_to_overwrite_a_run(grpo_run, grpo_args, capsys):
    from training import grpo

    assert grpo.main(grpo_args + ["--out", str(grpo_run)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_extractive_policy_needs_an_encoder(tmp_path, capsys):
    from training import grpo

    assert grpo.main(["--recipe", "smollm2-cpu-gsm8k", "--policy", "extractive", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "policy.model" in err and "causal LM" in err and "all-minilm-l6-v2" in err


def test_accelerate_cpu_single_process_is_refused(monkeypatch):
    from training.common import TrainingError
    from training.grpo import check_launch

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(TrainingError, match="--multi_gpu --num_processes"):
        check_launch()


def test_resume_after_sigkill_loses_nothing_but_the_unsaved_steps(grpo_run, grpo_args, tmp_path):
    """Kill a run (SIGKILL) once its first checkpoint is complete; fake a half-written later checkpoint;
    --resume continues from the newest complete one and ends exactly where an uninterrupted run ends."""
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "training.grpo", *grpo_args, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "checkpoint-1" / MARKER).is_file():
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and not (out / "rlpc.json").exists()
    half = out / "checkpoint-9"  # what a kill in the middle of a save leaves: files, but no marker
    half.mkdir()
    (half / "trainer_state.json").write_text("{}")
    resumed = subprocess.run([sys.executable, "-m", "training.grpo", "--out", str(out), "--resume"], cwd=ROOT,
                             env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "removed incomplete checkpoint checkpoint-9" in resumed.stdout and "resuming from" in resumed.stdout
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]
    from safetensors.torch import load_file

    a, b = load_file(out / "adapter_model.safetensors"), load_file(grpo_run / "adapter_model.safetensors")
    full = [json.loads(line) for line in (grpo_run / "log.jsonl").read_text().splitlines()]
    again = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    # The same weights up to float rounding: the uninterrupted run ran in this process, the resumed one in a fresh
    # interpreter whose thread pool sums in another order (measured: differences of ~1e-10, rewards identical).
    # A resume that replayed or skipped a step, or lost the optimiser state, moves them by orders of magnitude more.
    diffs = {k: (a[k] - b[k]).abs().max().item() for k in a}
    assert a.keys() == b.keys() and max(diffs.values()) < 1e-6, max(diffs.values())
    assert [r["reward"] for r in again] == pytest.approx([r["reward"] for r in full], abs=1e-6)
    assert [r["lambda"] for r in again] == [r["lambda"] for r in full]  # the constraint's state survived too


def test_card_is_regenerated_with_held_out_results(grpo_run, tmp_path):
    import shutil

    from training.card import main as card_main

    run = tmp_path / "run"
    run.mkdir()
    for name in ("training_summary.json", "recipe.yaml", "log.jsonl"):
        shutil.copy(grpo_run / name, run / name)
    (run / "eval").mkdir()
    metrics = {"dataset": {"name": "gsm8k", "split": "test", "rows": 200}, "aggregates": [
        {"method": "graph", "rate": 0.5, "n": 200, "ratio_mean": 0.49, "all_numbers_kept": 1.0,
         "likelihood_delta": {"mean": -0.12, "ci": [-0.2, -0.1], "n": 200}, "fidelity": {"mean": 0.8},
         "generation": {"n": 24, "agreement": 0.5, "accuracy_original": 0.1, "accuracy_compressed": 0.05},
         "fallbacks": 0, "latency_ms_per_1k": {"p50": 12.0}}]}
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    assert card_main([str(run)]) == 0
    card = (run / "README.md").read_text()
    assert "Not measured yet" not in card and "| graph | 0.5 | 200 | 0.490 | 1.000 | – | -0.120 |" in card


def test_compare_constraint_runs_both_arms(tiny, tmp_path):
    from benchmarks import compare_constraint

    out = tmp_path / "cmp"
    assert compare_constraint.main(tiny_overrides(tiny) + ["--max-steps", "2", "--out", str(out)]) == 0
    result = json.loads((out / "comparison.json").read_text())
    assert set(result["runs"]) == {"constrained", "fixed"} and result["fidelity_reward"] == "answer_agreement"
    assert result["runs"]["constrained"]["lambda_last"] > 0 and result["runs"]["fixed"]["lambda_last"] is None
    assert (out / "comparison.png").is_file() and "constrained | fixed" in (out / "comparison.md").read_text()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_accelerate_launch_runs_two_processes(tiny, sft_run, tmp_path):
    """``accelerate launch --multi_gpu --num_processes 2`` (torchrun; gloo on a machine without GPUs)."""
    out = tmp_path / "acc"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()),
           "-m", "training.grpo", *tiny_overrides(tiny), "--max-steps", "2", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["processes"] == 2 and summary["prompts_per_step"] == 2 and summary["steps_done"] == 2
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "rlpc.json").is_file()


def test_data_flag_sets_the_training_rows_and_a_users_file_loads_without_shared_data():
    import argparse

    from training.common import training_examples
    from training.recipe import add_recipe_arguments, recipe_from_args

    p = argparse.ArgumentParser()
    add_recipe_arguments(p)
    path = ROOT / "examples" / "data" / "support_qa.jsonl"
    args = p.parse_args(["--recipe", "minilm-extractive", "--data", str(path), "--out", "x"])
    recipe = recipe_from_args(args, "grpo")
    assert recipe.data.dataset == str(path)
    rows = training_examples(recipe)
    assert len(rows) == 16 and {r.task for r in rows} == {"qa"} and all(r.question and r.answers for r in rows)
    hub = p.parse_args(["--recipe", "minilm-extractive", "--data", "hf:openai/gsm8k:main", "--out", "x"])
    assert recipe_from_args(hub, "grpo").data.dataset == "hf:openai/gsm8k:main"  # colons survive as given


def test_the_card_says_when_evaluated_rows_are_the_training_rows():
    from training.card import held_out_note

    mine = {"dataset": "examples/data/support_qa.jsonl", "split": "train"}
    assert "not a held-out figure" in held_out_note({"name": "examples/data/support_qa.jsonl", "split": "test"}, mine)
    assert "did not train on" in held_out_note({"name": "gsm8k", "split": "test"}, mine)
    mixed = {"dataset": "gsm8k+squad", "split": "train"}
    assert "never used in training" in held_out_note({"name": "squad", "split": "heldout"}, mixed)
    assert "not a held-out figure" in held_out_note({"name": "squad", "split": "train"}, mixed)


def test_the_readmes_own_data_commands_run_in_a_fresh_clone(tmp_path):
    """The README's "Training on your own data" block, as written, on the files the repository ships (no ../shared);
    only the run folders move to a temporary place and the reader is left out (it is minutes, and optional)."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Training on your own data", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert [c[:3] for c in commands] == [["python", "-m", "training.grpo"], ["python", "-m", "training.evaluate"]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for cmd in commands:
        argv = [a.replace("runs/", f"{tmp_path}/") for a in cmd[1:]]
        if cmd[2] == "training.evaluate":
            argv += ["--reader", "none", "--feedback", "none", "--evaluator", "none"]
        p = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert p.returncode == 0, (cmd, p.stderr[-3000:])
    metrics = json.loads((tmp_path / "mine-eval" / "metrics.json").read_text())
    assert metrics["dataset"]["rows"] == 8 and {"graph", "mine", "truncate", "none"} <= set(metrics["config"]["methods"])
