"""The extractive policy and its group-relative trainer: the algorithm's pieces, encoding, the policy through the
Compressor, warm-up -> GRPO end to end with the real MiniLM, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from training.extractive import (bernoulli_kl, clipped_surrogate, data_positions, group_advantages, keep_offset,
                                 lr_at, mask_log_probs, sample_masks, sigmoid)

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
# cheap rewards (no evaluator): the trainer's code path, not a quality run
CHEAP = ["--set", "rewards=[{name: answer_span, weight: 2.0}, {name: compression, weight: 0.5}, "
         "{name: protected_coverage, weight: 1.0}]"]
TINY = ["--recipe", "minilm-extractive", "--set", "data.limit=4", "--set", "grpo.num_generations=4",
        "--set", "grpo.per_device_train_batch_size=8", "--set", "grpo.save_steps=2", *CHEAP]


def _need_shared_data():
    from training.data import default_data_dir

    if not (default_data_dir() / "gsm8k" / "train.jsonl").is_file():
        pytest.skip("the shared data (../shared/data) is not beside the repo: it sits there only on the project's "
                    "machines")


# ---------------------------------------------------------------- the algorithm's pieces

def test_keep_offset_spends_exactly_the_room_in_expectation():
    rng = np.random.default_rng(0)
    z, costs = rng.normal(size=50), rng.integers(1, 4, size=50).astype(float)
    free = np.ones(50, dtype=bool)
    free[:5] = False
    for room in (10.0, 40.0, 80.0):
        b = keep_offset(z, costs, free, room)
        assert abs((costs[free] * sigmoid(z[free] + b)).sum() - room) < 1e-6
    assert keep_offset(z, costs, free, 0.0) == -60.0 and keep_offset(z, costs, free, 1e9) == 60.0
    # the offset shifts probabilities, never the ranking
    b = keep_offset(z, costs, free, 40.0)
    assert (np.argsort(sigmoid(z + b)) == np.argsort(z)).all()


def test_sampled_masks_keep_protected_words_and_hit_the_budget_on_average():
    rng = np.random.default_rng(1)
    z, costs = rng.normal(size=200), np.ones(200)
    protected = np.zeros(200, dtype=bool)
    protected[::10] = True
    room = 60.0
    b = keep_offset(z, costs, ~protected, room)
    masks = sample_masks(z, b, protected, 4000, np.random.default_rng(2))
    assert masks.shape == (4000, 200) and masks[:, protected].all()
    assert abs((masks[:, ~protected] * costs[~protected]).sum(axis=1).mean() - room) < 0.5
    # higher logits are kept more often
    freq = masks[:, ~protected].mean(axis=0)
    assert np.corrcoef(freq, z[~protected])[0, 1] > 0.9
    # seeded: the same generator state gives the same masks (resume depends on it)
    again = sample_masks(z, b, protected, 4000, np.random.default_rng(2))
    assert (again == masks).all()


def test_group_advantages_are_normalised_within_each_group():
    r = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 1.0, 0.0]])
    a = group_advantages(r)
    assert np.allclose(a.mean(axis=1), 0.0)
    assert np.allclose(a[0].std(ddof=1), 1.0, atol=1e-3) and np.allclose(a[2].std(ddof=1), 1.0, atol=1e-3)
    assert (a[1] == 0).all()  # an all-equal group teaches nothing
    assert (np.argsort(a[0]) == np.argsort(r[0])).all()


def test_clipped_surrogate_stops_pushing_past_the_clip_range():
    adv = torch.tensor([1.0, -1.0])
    free = torch.tensor([True, True, False])
    logp_old = torch.log(torch.full((2, 3), 0.5))
    for ratio, grads_expected in ((1.05, True), (1.5, False)):
        # ratio above 1 + eps with a positive advantage: clipped (no gradient); with a negative one: not clipped
        logp_new = (logp_old + np.log(ratio)).clone().requires_grad_(True)
        loss, clip = clipped_surrogate(logp_new, logp_old, adv, free, epsilon=0.2)
        loss.backward()
        g = logp_new.grad
        assert (g[0, :2] != 0).all() == grads_expected
        assert (g[1, :2] != 0).all()  # pessimism: the negative advantage is always felt above 1 + eps
        assert (g[:, 2] == 0).all()  # protected words are not actions
        assert float(clip) == (0.0 if grads_expected else 1.0)


def test_mask_log_probs_and_kl_match_their_closed_forms():
    z = torch.tensor([0.3, -1.2, 2.0])
    m = torch.tensor([[1.0, 0.0, 1.0]])
    p = torch.sigmoid(z + 0.5)
    expected = torch.log(torch.stack([p[0], 1 - p[1], p[2]]))
    assert torch.allclose(mask_log_probs(z, 0.5, m)[0], expected, atol=1e-6)
    free = torch.tensor([True, True, True])
    assert float(bernoulli_kl(z, 0.0, z, 0.0, free)) == pytest.approx(0.0, abs=1e-7)
    q = torch.sigmoid(z - 1.0)
    p = torch.sigmoid(z)
    kl = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).mean()
    assert float(bernoulli_kl(z, 0.0, z - 1.0, 0.0, free)) == pytest.approx(float(kl), rel=1e-5)


def test_learning_rate_schedule_and_data_order():
    lrs = [lr_at(s, 100, 1e-3, 0.1, "cosine") for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3) and lrs[-1] < 1e-5
    assert lr_at(50, 100, 1e-3, 0.0, "constant") == 1e-3
    assert lr_at(4, 100, 1e-3, 10, "linear") == lr_at(4, 100, 1e-3, 0.1, "linear")  # warmup_steps: 10 steps = 10%
    order = [i for s in range(5) for i in data_positions(s, 2, 10, seed=3)]
    assert sorted(order) == list(range(10))  # one epoch: every row once
    assert data_positions(7, 2, 10, seed=3) == data_positions(7, 2, 10, seed=3)


# ---------------------------------------------------------------- encoding with the real MiniLM tokenizer

@pytest.fixture(scope="module")
def minilm_tokenizer():
    from rlpc_core.policies.extractive import load_encoder

    return load_encoder("all-minilm-l6-v2")[1]


def test_long_inputs_are_cut_into_whole_word_chunks_beside_the_question(minilm_tokenizer):
    from rlpc_core.policies.extractive import encode

    words = ("The committee met on 12 March 2019 in Geneva to discuss antidisestablishmentarianism. " * 60).split()
    enc = encode(minilm_tokenizer, words, "Where did the committee meet?", max_length=128, query_max_tokens=16)
    assert enc.input_ids.shape[1] <= 128 and enc.input_ids.shape[0] > 5
    seen = enc.word_index[enc.word_index >= 0]
    assert set(seen.tolist()) == set(range(len(words)))  # every word scored
    for c in range(enc.input_ids.shape[0]):  # each word in one chunk only, pieces contiguous
        ws = set(enc.word_index[c][enc.word_index[c] >= 0].tolist())
        for other in range(c + 1, enc.input_ids.shape[0]):
            assert not ws & set(enc.word_index[other][enc.word_index[other] >= 0].tolist())
    first = enc.input_ids[0]
    sep = minilm_tokenizer.sep_token_id
    assert first[0] == minilm_tokenizer.cls_token_id and (first == sep).sum() == 2  # [CLS] q [SEP] text [SEP]
    assert enc.token_type_ids[0][enc.word_index[0] >= 0].all()  # the text is the second segment
    no_q = encode(minilm_tokenizer, words[:20], None, max_length=128, query_max_tokens=16)
    assert no_q.input_ids.shape[0] == 1 and (no_q.token_type_ids == 0).all()


def test_a_window_too_small_for_the_question_is_a_clear_error(minilm_tokenizer):
    from rlpc_core.policies.extractive import encode

    with pytest.raises(ValueError, match="raise max_length"):
        encode(minilm_tokenizer, ["a", "b"], "word " * 80, max_length=64, query_max_tokens=60)


def test_extractive_config_checks_its_values():
    from rlpc_core import ExtractiveConfig

    for kwargs, message in (({"max_length": 1024}, "512"), ({"quantize": "fp8"}, "int8"),
                            ({"query_max_tokens": 400}, "half"), ({"batch_size": 0}, ">= 1")):
        with pytest.raises(ValueError, match=message):
            ExtractiveConfig(**kwargs)


# ---------------------------------------------------------------- warm-up -> GRPO -> Compressor, real MiniLM

@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    _need_shared_data()
    from training import sft

    out = tmp_path_factory.mktemp("x") / "warm"
    assert sft.main(["--recipe", "minilm-extractive", "--set", "warmup.bootstrap_rows=4", "--set", "sft.per_device_train_batch_size=4",
                     "--max-steps", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def grpo_run(warm, tmp_path_factory):
    from training import grpo

    out = tmp_path_factory.mktemp("x") / "grpo"
    assert grpo.main(TINY + ["--init", str(warm), "--max-steps", "4", "--out", str(out)]) == 0
    return out


def test_warmup_writes_small_weights_that_the_compressor_loads(warm):
    from rlpc_core import Compressor

    assert (warm / "extractive.safetensors").stat().st_size < 10 * 2**20  # adapter + head, never the base
    summary = json.loads((warm / "sft_summary.json").read_text())
    assert summary["policy_kind"] == "extractive" and summary["steps"] == 3
    c = Compressor.from_pretrained(warm, tokenizer="words")
    assert c.config.policy == "extractive"
    text = ("Tom bought 3 boxes of pencils for $12 each at the store near his school on Monday morning. "
            "How much did Tom spend on the pencils?")
    r = c.compress(text, rate=0.5)
    assert r.method == "extractive" and r.fallback is None and r.budget_met
    assert "3" in r.text.split() and "$12" in r.text.split()  # numbers are protected
    kept = [w for w, k in zip(text.split(), r.kept) if k]
    assert r.text.split() == kept  # an order-preserving subsequence
    q = c.compress("The tower was finished in 1889. It stands in Paris on the Seine.", rate=0.5,
                   query="Which river is the tower on?")
    assert q.method == "extractive" and q.compressed_tokens <= q.target_tokens


def test_grpo_end_to_end_logs_curves_card_and_a_loadable_compressor(grpo_run, warm):
    from rlpc_core import Compressor

    rows = [json.loads(line) for line in (grpo_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert set(r["rewards"]) == {"answer_span", "compression", "protected_coverage"}
        assert r["kl"] is not None and r["rate"] in (0.33, 0.5) and 0 < r["compression_ratio"] < 1
        assert r["clip_fraction"] is not None and r["loss"] is not None
    assert (grpo_run / "reward_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = (grpo_run / "README.md").read_text()
    assert "extractive compressor" in card and str(warm) in card and "## Held-out results" in card
    summary = json.loads((grpo_run / "training_summary.json").read_text())
    assert summary["policy_kind"] == "extractive" and summary["steps_done"] == 4
    r = Compressor.from_pretrained(grpo_run).compress("Ann has 4 cats and 2 dogs. How many pets?", rate=0.5)
    assert r.method == "extractive" and "4" in r.text and "2" in r.text


def test_grpo_resume_after_sigkill_matches_an_uninterrupted_run(grpo_run, warm, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "training.grpo", *TINY, "--init", str(warm), "--max-steps", "4", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    from training.checkpoints import is_complete

    while time.time() < deadline and not is_complete(out / "checkpoint-2"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert is_complete(out / "checkpoint-2"), "the run never wrote checkpoint-2"
    done = subprocess.run([sys.executable, "-m", "training.grpo", "--resume", "--out", str(out)], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout
    a, b = load_file(str(grpo_run / "extractive.safetensors")), load_file(str(out / "extractive.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # the unsaved steps were redone, not logged twice
    run = json.loads((out / "run.json").read_text())
    assert "--init" in run["command"] and "--resume" not in run["command"]  # the command that started it
    assert len(run["resumed_with"]) == 1 and "--resume" in run["resumed_with"][0]
    card = (out / "README.md").read_text()
    assert "resumed at step 2" in card and "resumed with `" in card  # the time row covers steps 3-4 only


def test_chunks_are_balanced_and_never_split_a_word(minilm_tokenizer):
    from rlpc_core.policies.extractive import encode

    rng = np.random.default_rng(0)
    vocab = ["a", "cat", "antidisestablishmentarianism", "3.14159", "Zürich-based", "photosynthesis,"]
    for _ in range(20):
        words = list(rng.choice(vocab, size=int(rng.integers(50, 400))))
        enc = encode(minilm_tokenizer, words, "What is it?", max_length=96, query_max_tokens=8)
        owner = {}
        for c in range(enc.input_ids.shape[0]):
            for w in enc.word_index[c][enc.word_index[c] >= 0].tolist():
                assert owner.setdefault(w, c) == c  # all of a word's pieces in one chunk
        assert set(owner) == set(range(len(words)))
        sizes = (enc.word_index >= 0).sum(axis=1)
        if len(sizes) > 1:
            assert sizes.min() >= sizes.max() // 2  # no short rest padded to a full chunk


def test_compress_batch_shares_forwards_and_matches_one_by_one(warm):
    from rlpc_core import Compressor

    # fp32: batching only adds padding, which the attention mask hides. (int8 dynamic quantization scales
    # activations per batch, so a text's scores can move slightly with its batch-mates.)
    c = Compressor.from_pretrained(warm, tokenizer="words", extractive={"quantize": "none"})
    texts = ["The tower was finished in 1889. It stands in Paris on the Seine, near the Champ de Mars park.",
             "", "Short.", "Ann has 4 cats and 2 dogs and she feeds them twice a day with dry food. How many pets?",
             " ".join(["Word"] * 900)]
    queries = ["Which river?", None, None, None, "What?"]
    batch = c.compress_batch(texts, rate=0.5, query=queries)
    single = [c.compress(t, rate=0.5, query=q) for t, q in zip(texts, queries)]
    assert [b.text for b in batch] == [s.text for s in single]
    assert [b.kept for b in batch] == [s.kept for s in single]
    assert all(b.seconds >= 0 for b in batch) and batch[1].text == ""


def test_an_untrained_policy_selects_exactly_what_the_graph_selects(tmp_path):
    _need_shared_data()
    from rlpc_core import Compressor
    from training.data import load
    from training.extractive import fresh_model, save_compressor_folder
    from training.recipe import load_recipe

    recipe = load_recipe("minilm-extractive", ["extractive.prior_sentence_share=0.0"])  # no sentence pooling
    model, _ = fresh_model(recipe, "cpu")
    save_compressor_folder(model.eval(), recipe, tmp_path)
    ours, graph = Compressor.from_pretrained(tmp_path), Compressor(policy="graph")
    for e in load("squad", split="heldout", limit=8, seed=1) + load("gsm8k", split="test", limit=4, seed=1):
        q = e.question if e.task == "qa" else None
        for rate in (0.33, 0.5):
            assert ours.compress(e.text, rate=rate, query=q).kept == graph.compress(e.text, rate=rate, query=q).kept


def test_missing_weights_fall_back_to_the_graph_and_say_why(tmp_path):
    from rlpc_core import Compressor

    c = Compressor(policy="extractive", extractive={"weights": str(tmp_path / "nowhere")}, tokenizer="words")
    text = "Tom bought 3 boxes of pencils for $12 each at the store near his school. How much did he spend?"
    r = c.compress(text, rate=0.5)
    assert r.method == "graph" and "weights not found" in r.fallback and "training.grpo" in r.fallback
    assert r.text == Compressor(policy="graph", tokenizer="words").compress(text, rate=0.5).text


def test_unscaled_advantages_keep_the_size_of_the_differences():
    r = np.array([[1.0, 1.0, 1.0, 1.01], [0.0, 2.0, 0.0, 2.0]])
    a = group_advantages(r, scale=False)
    assert np.allclose(a.sum(axis=1), 0) and abs(a[0]).max() < 0.01 and abs(a[1]).max() == 1.0
    assert abs(group_advantages(r)[0]).max() > 1  # scaled, noise pulls as hard as signal


def test_the_shipped_checkpoint_is_small_documented_and_loads():
    from rlpc_core import Compressor
    from rlpc_core.policies.extractive import EMBEDDED_WEIGHTS, WEIGHTS_FILE, WeightsInfo

    assert (EMBEDDED_WEIGHTS / WEIGHTS_FILE).stat().st_size <= 10 * 2**20  # head + adapter only
    info = WeightsInfo.read(EMBEDDED_WEIGHTS)
    assert info.base_model == "all-minilm-l6-v2"
    card = (EMBEDDED_WEIGHTS / "README.md").read_text()
    assert "minilm-extractive" in card and "seed" in card and "held-out" in card.lower()
    c = Compressor(policy="extractive")  # the embedded weights
    text = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
            "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway.")
    r = c.compress(text, rate=0.5, query="Which region is named after the Normans?")
    assert r.method == "extractive" and r.fallback is None and r.budget_met and r.protected_ok
    assert "10th" in r.text and "11th" in r.text  # numbers are protected


def test_int8_is_opt_in_and_keeps_the_guarantees(warm):
    from rlpc_core import Compressor
    from rlpc_core.config import ExtractiveConfig

    assert ExtractiveConfig().quantize == "none"  # fp32 by default: int8 measured slightly lower quality
    c = Compressor.from_pretrained(warm, tokenizer="words", extractive={"quantize": "int8"})
    text = "Ann has 4 cats and 2 dogs and she feeds them twice a day with dry food from the shop. How many pets?"
    r = c.compress(text, rate=0.5)
    assert r.fallback is None and r.protected_ok and {"4", "2"} <= set(r.text.split())
    words = text.split()
    it = iter(words)
    assert all(w in it for w in r.text.split())  # an order-preserving subsequence
    encoder = c.policy._load()[0].encoder
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in encoder.modules())


# ---------------------------------------------------------------- block actions (extractive.action = blocks)

BLOCK_TEXT = ("The museum opens at 9 am on weekdays. Visitors must not bring food into the galleries. "
              "Tickets cost $12 for adults and $6 for children under 12. The east wing was closed in 2019 for "
              "repairs. Guided tours leave every hour from the main hall. Photography without flash is allowed. "
              "The cafe on the roof serves lunch until 3 pm. What may visitors not bring into the galleries?")


def _block_plan(seed: int = 0, **selection):
    from rlpc_core.config import SelectionConfig
    from rlpc_core.selection import plan_blocks
    from rlpc_core.structure import analyze
    from rlpc_core.units import find_units
    from rlpc_core.words import split_words

    words = split_words(BLOCK_TEXT)
    structure = analyze(words, query=None)
    units = find_units(words.tokens, words.line_breaks)
    costs = np.ones(len(words), dtype=np.int64)
    z = np.random.default_rng(seed).normal(size=len(words))
    numbers = np.array([any(c.isdigit() for c in w) for w in words.tokens])
    plan = plan_blocks(words, costs, z, numbers, structure.verbatim, structure, units, query=None,
                       config=SelectionConfig(**selection))
    return words, units, costs, z, plan


def test_block_rollouts_keep_whole_units_of_chosen_blocks_within_the_budget():
    from training.extractive import block_rollout

    words, units, costs, z, plan = _block_plan()
    assert plan is not None and plan.n_blocks >= 7
    budget = int(0.5 * len(words))
    roll = block_rollout(plan, z, budget, 256, np.random.default_rng(3), temperature=1.0)
    chosen, kept = roll["chosen"], roll["words"]
    assert chosen.shape == (256, plan.n_blocks) and kept.shape == (256, len(words))
    assert len({tuple(c) for c in chosen}) > 20  # the samples differ: a group has something to compare
    assert kept[:, plan.verbatim].all()  # the question stays whatever is sampled
    cost = (kept * costs).sum(axis=1)
    assert (cost <= budget).all() and cost.mean() > 0.8 * budget
    for k in range(256):
        in_chosen = chosen[k][np.maximum(plan.block, 0)] & plan.free
        # every kept word is verbatim or in a chosen block (no stray words from dropped sentences)
        assert not (kept[k] & plan.free & ~in_chosen).any()
        for lo, hi in units.spans:  # a negation, a price, a time: whole or not at all
            span = kept[k, lo:hi][plan.free[lo:hi]]
            assert span.all() or not span.any(), (words.tokens[lo:hi], span)


def test_block_log_probs_and_their_gradient_reach_the_blocks_words():
    from training.extractive import block_segments, segment_mean

    _, _, _, z, plan = _block_plan(1)
    idx, blk = block_segments(plan)
    s_np = segment_mean(z, idx, blk, plan.n_blocks)
    zt = torch.tensor(z, requires_grad=True)
    s_t = segment_mean(zt, idx, blk, plan.n_blocks)
    assert np.allclose(s_t.detach().numpy(), s_np)
    s_t[0].backward()
    touched = np.flatnonzero(zt.grad.numpy())
    assert set(touched) <= set(plan.members_of[0].tolist()) and len(touched) > 0
    # filler words do not carry a block's logit when it has content words
    assert plan.content[touched].all()


def test_with_a_policy_logit_weight_sampling_and_inference_rank_blocks_by_the_same_value():
    from rlpc_core.selection import block_logits
    from training.extractive import block_rollout, block_scores, block_segments

    _, _, _, z, plain = _block_plan(2)
    _, _, _, _, plan = _block_plan(2, policy_logit_weight=2.0)
    logit = block_logits(z, plan.block, plan.free, plan.content, plan.n_blocks)
    assert np.allclose(plan.value, plain.value + 2.0 * logit)  # inference: the value holds the policy's logit
    idx, blk = block_segments(plan)
    assert np.allclose(block_scores(plan, z, idx, blk), plan.value)  # sampling scores are that value
    # the gradient reaches the words through the logit part only, scaled by the weight
    zt = torch.tensor(z, requires_grad=True)
    block_scores(plan, zt, idx, blk)[0].backward()
    touched = np.flatnonzero(zt.grad.numpy())
    assert set(touched) <= set(plan.members_of[0].tolist()) and len(touched) > 0
    assert np.isclose(zt.grad.sum().item(), 2.0)
    # blocks inference ranks first are kept more often
    roll = block_rollout(plan, z, int(0.5 * len(z)), 512, np.random.default_rng(0), temperature=1.0)
    freq = roll["chosen"].mean(axis=0)
    best, worst = plan.by_value[0], plan.by_value[-1]
    assert freq[best] > freq[worst]
    # without the weight, sampling follows the block logit alone (the earlier behaviour)
    assert np.allclose(block_scores(plain, z, idx, blk), logit)


def test_grpo_with_block_actions_trains_and_logs_the_rows_it_treated_as_blocks(warm, tmp_path):
    from rlpc_core import Compressor
    from training import grpo

    out = tmp_path / "blocks"
    assert grpo.main(TINY + ["--set", "extractive.action=blocks", "--init", str(warm), "--max-steps", "3",
                             "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert sum(r.get("block_rows", 0) for r in rows) > 0  # the qa rows were block actions (GSM8K stays words)
    assert all(r["loss"] is not None and r["kl"] is not None for r in rows)
    assert json.loads((out / "rlpc.json").read_text())["config"]["policy"] == "extractive"
    assert json.loads((out / "training_summary.json").read_text())["action"] == "blocks"
    r = Compressor.from_pretrained(out).compress(BLOCK_TEXT, rate=0.5)
    assert r.method == "extractive" and "not" in r.text.split()


def test_the_card_shows_curves_and_means_per_rate_and_the_readers_held_out_figures(tmp_path):
    from training.card import main as card_main
    from training.downstream import reader_aggregate

    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    summary = {"recipe_name": "r", "policy_kind": "extractive", "base_model": "all-minilm-l6-v2",
               "target_rate": [0.33, 0.5], "action": "blocks", "steps": 40, "steps_done": 40}
    (run / "training_summary.json").write_text(json.dumps(summary))
    (run / "recipe.yaml").write_text("name: r\n")
    # the 0.33 steps earn less than the 0.5 steps: a mixed mean would hide both levels
    log = [{"step": s, "rate": 0.33 if s % 2 else 0.5, "rewards": {"reader_accuracy": 0.2 if s % 2 else 0.9},
            "reward": 0.2 if s % 2 else 0.9, "kl": 0.001, "compression_ratio": 0.3 if s % 2 else 0.5}
           for s in range(1, 41)]
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
    rows = [{"reader_accuracy": a, "reader_accuracy_original": 1.0, "reader_em": a, "reader_em_original": 1.0,
             "reader_f1": a, "reader_f1_original": 1.0, "reader_contains": a, "reader_contains_original": 1.0}
            for a in [1.0] * 30 + [0.0] * 10]
    agg = lambda m: {"method": m, "rate": 0.33, "n": 40, "ratio_mean": 0.33,  # noqa: E731
                     "reader": reader_aggregate(rows, seed=0, throughput=None)}
    metrics = {"dataset": {"name": "squad", "split": "heldout", "rows": 40},
               "reader": {"spec": "llamacpp:qwen2.5-coder-1.5b-instruct"}, "aggregates": [agg("runs/x")]}
    (run / "eval" / "metrics.json").write_text(json.dumps(metrics))
    assert card_main([str(run)]) == 0
    card = (run / "README.md").read_text()
    assert "rate 0.33: first 10 | rate 0.33: last 10 | rate 0.5: first 10 | rate 0.5: last 10" in card
    assert "| rewards/reader_accuracy | 0.200 | 0.200 | 0.900 | 0.900 |" in card
    assert "one action per sentence or demonstration" in card
    assert "Reader `llamacpp:qwen2.5-coder-1.5b-instruct`" in card and "+25.0 [" in card  # 25 points lost
    assert (run / "reward_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_answer_sentence_labels_mark_the_sentences_that_hold_the_answer():
    from types import SimpleNamespace

    from rlpc_core.units import find_units
    from rlpc_core.words import split_words
    from training.extractive import answer_sentence_labels, reward_best_labels

    text = ("Spacewar! is a space combat video game developed in 1962 by Steve Russell. It was written for the "
            "PDP-1 at MIT. Dr. Martin Graetz helped. It spread to many installations of the PDP-1.")
    words = split_words(text)
    row = SimpleNamespace(example=SimpleNamespace(task="qa", answers=["Steve Russell"]), words=words,
                          tokens=words.tokens, units=find_units(words.tokens, words.line_breaks),
                          query="Who made the first video game?", costs=np.ones(len(words), dtype=np.int64),
                          original_tokens=len(words))

    def kept(label):
        return " ".join(w for w, k in zip(words.tokens, label) if k)

    # the answer sentence, whole, and nothing else
    assert kept(answer_sentence_labels(row, 0.33)) == "Spacewar! is a space combat video game developed in 1962 by Steve Russell."
    # the selection's sentences: "Dr. Martin Graetz helped." is one, not cut after "Dr."
    row.example.answers = ["Martin Graetz"]
    assert kept(answer_sentence_labels(row, 0.33)) == "Dr. Martin Graetz helped."
    # an answer no one sentence holds: the reward-best target
    row.example.answers = ["MIT Dr. Martin"]
    assert (answer_sentence_labels(row, 0.33) == reward_best_labels(row, 0.33)).all()
    # a math row has no answer sentence: the reward-best target
    row.example = SimpleNamespace(task="math", answers=["12"])
    assert (answer_sentence_labels(row, 0.33) == reward_best_labels(row, 0.33)).all()
