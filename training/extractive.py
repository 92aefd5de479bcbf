"""Training the extractive policy: a supervised warm-up on the best samples of the rewards, then group-relative
policy gradients.

    python -m training.sft  --recipe minilm-extractive --out runs/minilm-warmup
    python -m training.grpo --recipe minilm-extractive --init runs/minilm-warmup --out runs/minilm-grpo
    python -m training.grpo --out runs/minilm-grpo --resume            # continue a killed run

trl has no trainer for a policy whose action is a keep-mask over the input's words, so this module is ours. The
policy gives every word a logit ``z``. One step:

1. **Rollouts.** For each of the step's prompts, at the step's target rate (drawn from ``extractive.rates``), an
   offset ``b`` is solved so that the expected token cost of the kept words, ``sum cost_i * sigmoid(z_i + b)``,
   equals the budget (protected words are always kept and cost their share first). ``G`` keep-masks are
   sampled, each word independently with probability ``sigmoid(z_i + b)``. The offset removes the one thing
   the ranking does not decide (how many words) so every group is sampled at the budget inference will use,
   and inference (top words within the budget) is this distribution's mode.
2. **Rewards.** Each mask's text (the kept words, order preserved) is scored by the reward registry, the same
   functions and evaluator the generative policy trains with (``answer_likelihood``, ``answer_span``,
   ``fidelity``, ``compression``, ...), summed with the recipe's weights. A reward named by
   ``constraint.reward`` can be a Lagrange-constrained one (:class:`training.constraint.FidelityConstraint`).
3. **Advantages.** GRPO's: rewards normalised within each prompt's group, ``(r - mean) / (std + 1e-4)``.
4. **Update.** ``grpo.num_iterations`` passes of the clipped surrogate over the free (unprotected) words, per-word
   ratio ``pi(m_i) / pi_old(m_i)`` clipped to ``1 +- grpo.epsilon`` as in trl's token-level GRPO loss, plus
   ``beta`` times the exact Bernoulli KL to the starting policy (each at its own calibrated offset).

Checkpoints are ``checkpoint-N`` folders (adapter + head, optimizer state in safetensors, no pickle) that count
only once marked complete (:mod:`training.checkpoints`); ``--resume`` continues from the newest. Rollouts are
seeded by ``(seed, step)`` and the data order by ``(seed, epoch)``, so a resumed run samples what the
uninterrupted run would have.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from training.card import CURVES, LOG, SUMMARY, plot_reward_curves, read_log
from training.checkpoints import mark_complete, rotate
from training.common import (command_line, gold_of, policy_device, precompute_original_side, say,
                             training_examples, TrainingError, write_json, write_text)
from training.recipe import Recipe

STATE_FILE = "trainer_state.json"  # the name training.checkpoints looks for in a complete checkpoint
OPTIMIZER_FILE = "optimizer.safetensors"
LORA_TARGETS_DEFAULT = ("query", "key", "value", "dense")


# ---------------------------------------------------------------- the algorithm's pieces (unit-tested)

def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def keep_offset(logits: np.ndarray, costs: np.ndarray, free: np.ndarray, room: float) -> float:
    """The offset ``b`` with ``sum(costs[free] * sigmoid(logits[free] + b)) == room`` (bisection; monotone in b).

    ``room`` is the budget left after the protected words; with no room every free word is dropped (b = -inf
    in effect: -60), with room for all of them every one is kept (+60).
    """
    z, c = logits[free].astype(np.float64), costs[free].astype(np.float64)
    if z.size == 0 or room <= 0:
        return -60.0
    if room >= c.sum():
        return 60.0
    lo, hi = -60.0 - float(z.max()), 60.0 - float(z.min())
    for _ in range(60):  # 120 / 2^60: far below any logit difference that matters
        mid = 0.5 * (lo + hi)
        if float((c * sigmoid(z + mid)).sum()) > room:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


def sample_masks(logits: np.ndarray, offset: float, protected: np.ndarray, g: int, rng: np.random.Generator,
                 temperature: float = 1.0) -> np.ndarray:
    """``g`` keep-masks ``[g, n]``: free words kept with probability ``sigmoid(logits / T + offset)``, protected
    words always."""
    p = sigmoid(logits / temperature + offset)
    masks = rng.random((g, logits.size)) < p
    masks[:, protected] = True
    return masks


def group_advantages(rewards: np.ndarray, eps: float = 1e-4, scale: bool = True) -> np.ndarray:
    """GRPO's advantages: each row (one prompt's group) centred on its mean and, with ``scale``, divided by its
    std (ddof 1, as trl). ``scale=False`` is Dr. GRPO's form: a group whose masks differ only by noise (every
    mask keeps the answer, say) then pulls as little as its rewards differ, instead of as hard as any other.

    A group whose rewards are all equal carries no signal: its advantages are 0.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    mean = rewards.mean(axis=1, keepdims=True)
    if not scale:
        return rewards - mean
    std = rewards.std(axis=1, ddof=1, keepdims=True) if rewards.shape[1] > 1 else np.zeros_like(mean)
    return (rewards - mean) / (std + eps)


def mask_log_probs(logits: Any, offset: Any, masks: Any) -> Any:
    """Per-word log-probability of each mask under the calibrated Bernoulli policy (torch; ``[g, n]``)."""
    import torch.nn.functional as F

    z = logits + offset
    return masks * F.logsigmoid(z) + (1.0 - masks) * F.logsigmoid(-z)


def clipped_surrogate(logp_new: Any, logp_old: Any, advantages: Any, free: Any, epsilon: float) -> tuple[Any, Any]:
    """``(loss, clip_fraction)``: PPO's pessimistic clipped objective per word, averaged over free words and masks.

    ``logp_*``: ``[g, n]`` per-word log-probs; ``advantages``: ``[g]``; ``free``: ``[n]`` bool (protected words
    are not actions).
    """
    import torch

    ratio = torch.exp(logp_new - logp_old)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon) * adv
    per_word = -torch.minimum(unclipped, clipped)
    weight = free.to(per_word.dtype)[None, :].expand_as(per_word)
    denom = weight.sum().clamp(min=1.0)
    loss = (per_word * weight).sum() / denom
    clip_fraction = (((ratio - 1.0).abs() > epsilon).to(per_word.dtype) * weight).sum() / denom
    return loss, clip_fraction


def bernoulli_kl(logits_new: Any, offset_new: Any, logits_ref: Any, offset_ref: Any, free: Any) -> Any:
    """Mean over free words of KL(Bernoulli(p_new) || Bernoulli(p_ref)), each at its own calibrated offset."""
    import torch
    import torch.nn.functional as F

    zn, zr = logits_new + offset_new, logits_ref + offset_ref
    p = torch.sigmoid(zn)
    kl = p * (F.logsigmoid(zn) - F.logsigmoid(zr)) + (1 - p) * (F.logsigmoid(-zn) - F.logsigmoid(-zr))
    w = free.to(kl.dtype)
    return (kl * w).sum() / w.sum().clamp(min=1.0)


#: trl's ``lr_scheduler_type`` values the extractive trainer's own optimiser loop follows.
SCHEDULES = ("cosine", "linear", "constant", "constant_with_warmup")


def lr_at(step: int, total: int, peak: float, warmup: float, schedule: str) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up, then cosine / linear decay to 0, or constant.
    ``warmup`` is transformers' ``warmup_steps``: below 1 a share of ``total``, else a number of steps."""
    warm = int(math.ceil(warmup * total)) if warmup < 1 else int(warmup)
    if step < warm:
        return peak * (step + 1) / warm
    if schedule in ("constant", "constant_with_warmup"):
        return peak
    progress = (step - warm) / max(1, total - warm)
    if schedule == "linear":
        return peak * max(0.0, 1.0 - progress)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def data_positions(step: int, per_step: int, n_rows: int, seed: int) -> list[int]:
    """Row indices of ``step``: epoch-wise permutations seeded by ``(seed, epoch)``, consumed ``per_step`` at a time."""
    out = []
    for pos in range(step * per_step, (step + 1) * per_step):
        epoch, k = divmod(pos, n_rows)
        out.append(int(np.random.default_rng([seed, epoch]).permutation(n_rows)[k]))
    return out


def block_segments(plan: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(word indices, their block)``: a block's logit is the mean over these (its content words; all its words
    when it has none), as in :func:`rlpc_core.selection.block_logits`."""
    from rlpc_core.selection import block_segments as segments

    return segments(plan.block, plan.free, plan.content, plan.n_blocks)


def segment_mean(z: Any, idx: np.ndarray, blk: np.ndarray, n_blocks: int) -> Any:
    """Mean of ``z[idx]`` per block (numpy or torch: the gradient of a block flows to its words)."""
    counts = np.bincount(blk, minlength=n_blocks).astype(np.float64)
    if isinstance(z, np.ndarray):
        return np.bincount(blk, weights=z[idx], minlength=n_blocks) / np.maximum(counts, 1)
    import torch

    sums = torch.zeros(n_blocks, dtype=z.dtype, device=z.device).index_add(
        0, torch.as_tensor(blk, device=z.device), z[torch.as_tensor(idx, device=z.device)])
    return sums / torch.as_tensor(np.maximum(counts, 1), dtype=z.dtype, device=z.device)


def block_scores(plan: Any, z: Any, idx: np.ndarray, blk: np.ndarray) -> Any:
    """The score each block is sampled by, under word logits ``z`` (numpy, or torch with the gradient).

    With ``policy_logit_weight`` > 0 (a recipe that trains the policy's own block logit) it is the block's value as
    inference ranks it: the selection's value without the policy's logit, held fixed, plus the weight times the
    block logit under ``z``; so greedy inference takes the blocks sampling favours. With weight 0 it is the block
    logit alone (inference ranks by the selection's value, of which the policy's scores are a small part).
    """
    s = segment_mean(z, idx, blk, plan.n_blocks)
    if not plan.logit_weight:
        return s
    fixed = plan.value - plan.logit_part
    if isinstance(s, np.ndarray):
        return fixed + plan.logit_weight * s
    import torch

    return torch.as_tensor(fixed, dtype=s.dtype, device=s.device) + plan.logit_weight * s


def block_rollout(plan: Any, z: np.ndarray, budget: int, g: int, rng: np.random.Generator,
                  temperature: float) -> dict[str, Any]:
    """``g`` samples of which blocks to keep, made real by the shared selection.

    Block keep probabilities are ``sigmoid(s / T + b)`` with ``s`` the block scores (:func:`block_scores`) and ``b``
    solved so that the expected cost of the kept blocks' short forms equals the room the budget leaves after the
    verbatim words; each sample's chosen blocks, in value order, go through :func:`rlpc_core.selection.realize`
    (forms, units, the fine stage, the budget), so the rewards score exactly what inference would produce from such
    a choice.
    """
    from rlpc_core.selection import realize

    idx, blk = block_segments(plan)
    s = block_scores(plan, z, idx, blk)
    room = budget - float(plan.costs[plan.verbatim].sum())
    b = keep_offset(s / temperature, plan.short_cost, np.ones(plan.n_blocks, dtype=bool), room)
    chosen = rng.random((g, plan.n_blocks)) < sigmoid(s / temperature + b)
    order = plan.by_value
    words = np.stack([realize(plan, order[c[order]], budget) for c in chosen])
    return {"idx": idx, "blk": blk, "chosen": chosen, "offset": b, "words": words, "room": room, "plan": plan}


# ---------------------------------------------------------------- rows, prepared once

@dataclass
class Row:
    """One training row with everything the policy's forward needs, computed once (rows recur each epoch)."""

    example: Any
    words: Any  # rlpc_core.words.Words
    tokens: list[str]
    features: np.ndarray
    protected: np.ndarray
    sentence: np.ndarray
    costs: np.ndarray
    original_tokens: int
    enc: Any  # EncodedChunks
    query: Optional[str]
    # the shared selection's view of the prompt (block actions): what stays verbatim, the meaning units, and whether
    # it is a math problem (word-level either way)
    structure: Any = None
    units: Any = None
    verbatim: Optional[np.ndarray] = None
    math: bool = False


def prepare_rows(examples: Sequence[Any], tokenizer: Any, recipe: Recipe) -> list[Row]:
    from rlpc_core.policies.extractive import encode, word_feature_matrix
    from rlpc_core.selection import _is_math_problem
    from rlpc_core.structure import analyze, task_text
    from rlpc_core.tokens import get_counter
    from rlpc_core.units import find_units
    from rlpc_core.words import split_words

    config = recipe.compressor_config()  # the settings the saved compressor runs with
    counter = get_counter(config.tokenizer)
    rows = []
    for ex in examples:
        words = split_words(ex.text)
        tokens = words.tokens
        query = ex.question if ex.task in ("qa", "mc") else None
        structure = analyze(words, query=query)
        # as the compressor does: without a separate question, the prompt's own question is what scoring is aware of
        score_query = query or task_text(words, structure) or None
        features, protected, sentence = word_feature_matrix(tokens, config.graph, score_query)
        costs = counter.word_costs(words)
        enc = encode(tokenizer, tokens, score_query, max_length=recipe.extractive.max_length,
                     query_max_tokens=config.extractive.query_max_tokens)
        units = find_units(tokens, words.line_breaks)
        rows.append(Row(ex, words, tokens, features, protected, sentence, costs, int(costs.sum()), enc, query,
                        structure, units, structure.verbatim, bool(_is_math_problem(words, structure, protected, query))))
    return rows


def forward_rows(model: Any, rows: Sequence[Row], device: str) -> list[Any]:
    """Word logits of each row (a list of 1-D tensors), all rows' chunks in one batched forward."""
    import torch

    from rlpc_core.policies.extractive import stack_chunks

    starts = np.concatenate([[0], np.cumsum([len(r.tokens) for r in rows])]).astype(np.int64)
    items = [(r.enc, c, int(starts[k])) for k, r in enumerate(rows) for c in range(r.enc.input_ids.shape[0])]
    ids, types, mask, widx = stack_chunks(items)
    sent_starts = np.concatenate([[0], np.cumsum([int(r.sentence.max()) + 1 if len(r.sentence) else 0 for r in rows])])
    sentence = np.concatenate([r.sentence + sent_starts[k] for k, r in enumerate(rows)])
    t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    logits = model(t(ids), t(types), t(mask), t(np.concatenate([r.features for r in rows])), t(widx), int(starts[-1]),
                   t(sentence))
    return [logits[starts[k]:starts[k + 1]] for k in range(len(rows))]


# ---------------------------------------------------------------- models

def fresh_model(recipe: Recipe, device: str) -> tuple[Any, Any]:
    """(model, tokenizer): the base encoder with a new LoRA adapter and a new head (the warm-up's start)."""
    import torch

    from rlpc_core.lora import add_lora
    from rlpc_core.policies.extractive import build_model, load_encoder

    torch.manual_seed(recipe.seed)
    encoder, tok = load_encoder(recipe.policy.model)
    lora = recipe.policy.lora
    try:
        add_lora(encoder, lora.target_modules, lora.r, lora.alpha, lora.dropout)
    except ValueError as err:
        raise TrainingError(f"policy.lora.target_modules: {err}") from None
    model = build_model(encoder, head_dim=recipe.extractive.head_dim,
                        prior_sentence_share=recipe.extractive.prior_sentence_share)
    return model.to(device), tok


def weights_info(recipe: Recipe) -> Any:
    from rlpc_core.policies.extractive import FEATURES, WeightsInfo

    lora = recipe.policy.lora
    return WeightsInfo(base_model=recipe.policy.model, head_dim=recipe.extractive.head_dim, features=FEATURES,
                       lora_r=lora.r, lora_alpha=lora.alpha, lora_targets=tuple(lora.target_modules),
                       max_length=recipe.extractive.max_length)


def load_trainable(folder: Path, device: str) -> tuple[Any, Any]:
    import torch

    from rlpc_core.policies.extractive import has_weights, load_model

    if not has_weights(folder):
        raise TrainingError(f"--init {str(folder)!r} holds no extractive weights (extractive.json + "
                            "extractive.safetensors); pass the --out folder of python -m training.sft with an "
                            "extractive recipe")
    model, tok, _ = load_model(folder, merge=False)
    model.encoder.requires_grad_(False)
    for name, p in model.named_parameters():
        # a prior share saved as -inf (exactly the graph's ranking) stays fixed: its gradient is 0 anyway
        p.requires_grad_((name.endswith(("lora_A", "lora_B")) or name.startswith("head.")) and bool(torch.isfinite(p).all()))
    return model.to(device), tok


def save_compressor_folder(model: Any, recipe: Recipe, out: Path) -> None:
    """Weights + ``rlpc.json``: ``Compressor.from_pretrained(out)`` loads the extractive policy from ``out``."""
    from rlpc_core.policies.extractive import save_weights
    from training.common import save_compressor

    save_weights(model, weights_info(recipe), out)
    save_compressor(out, recipe)  # rlpc.json last: its presence means the folder is complete


# ---------------------------------------------------------------- optimizer state without pickle

def save_optimizer(optimizer: Any, path: Path) -> None:
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if hasattr(value, "shape"):
                tensors[f"{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    meta = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_optimizer(optimizer: Any, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(json.loads(meta["scalars"]).items()):
        idx, _, name = key.partition(".")
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})


# ---------------------------------------------------------------- warm-up (python -m training.sft)

def graph_labels(row: Row, rate: float) -> np.ndarray:
    """The graph policy's keep mask of ``row`` at ``rate`` (the Compressor's own selection, same budget)."""
    from rlpc_core import select_words
    from rlpc_core.graph import score_words

    scored = score_words(row.tokens, query=row.query)
    budget = max(1, int(round(rate * row.original_tokens)))
    return select_words(scored.scores, scored.protected, row.costs, budget)


def reward_best_labels(row: Row, rate: float) -> np.ndarray:
    """The best of a few candidate masks under the evaluator-free rewards: the best samples of the rewards.

    Candidates: the graph policy's mask, and for a qa row, the graph's mask with one answer-bearing sentence
    forced in (the rest of the budget filled in the graph's order), one candidate per such sentence. Each is
    scored ``answer_span + compression`` (the recipe's own reward functions, at ``rate``) and the best kept,
    ties to the graph's. For math rows (no answer span) this is the graph's mask.
    """
    from rlpc_core import select_words
    from rlpc_core.graph import score_words, word_features
    from rlpc_core.rewards import answer_span_score, answer_survives, compression_score
    from rlpc_core.words import join_kept

    scored = score_words(row.tokens, query=row.query)
    budget = max(1, int(round(rate * row.original_tokens)))
    base = select_words(scored.scores, scored.protected, row.costs, budget)
    if row.example.task != "qa":
        return base
    answers = list(row.example.answers)
    sentence = word_features(row.tokens).sentence
    candidates = [base]
    for sid in np.unique(sentence):
        inside = sentence == sid
        if answer_survives(" ".join(t for t, k in zip(row.tokens, inside) if k), answers):
            candidates.append(select_words(scored.scores, scored.protected | inside, row.costs, budget))

    def value(mask: np.ndarray) -> float:
        ratio = float(row.costs[mask].sum()) / max(1, row.original_tokens)
        return answer_span_score(join_kept(row.words, mask), answers) + compression_score(ratio, rate)

    return max(candidates, key=value)  # max keeps the first of equals: the graph's mask


def answer_sentence_labels(row: Row, rate: float) -> np.ndarray:
    """The words of every sentence that holds a gold answer (qa rows): a sentence-relevance target, as Provence
    trains its pruner, in the shared selection's own sentences (the blocks inference ranks), so that the policy's
    block logit learns which sentence answers the question, what the selection's lexical coverage cannot see when
    the answer sentence shares few words with the question. Rows with no gold answer in any one sentence (math,
    an answer across a sentence break) fall back to :func:`reward_best_labels`; ``rate`` only matters there.

    Measured (recipe ``minilm-extractive-answers``, figures in its header): level with the graph policy on held-out
    rows."""
    from rlpc_core.rewards import answer_survives
    from rlpc_core.selection import sentence_ids

    if row.example.task == "qa" and row.example.answers:
        sent, _ = sentence_ids(row.words, row.units)
        answers = list(row.example.answers)
        label = np.zeros(len(row.tokens), dtype=bool)
        for sid in np.unique(sent):
            inside = sent == sid
            if answer_survives(" ".join(t for t, k in zip(row.tokens, inside) if k), answers):
                label |= inside
        if label.any():
            return label
    return reward_best_labels(row, rate)


WARMUP_LABELS = {"graph": graph_labels, "reward-best": reward_best_labels, "answer-sentences": answer_sentence_labels}


def warmup(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Supervised warm-up: binary cross-entropy of the policy's keep probabilities (at the calibrated offset)
    against target masks at each rate (``extractive.warmup_labels``: the graph policy's, or the best of a few
    candidates under the rewards); protected words excluded."""
    import torch
    from tqdm.auto import tqdm

    device = policy_device(recipe.sft)
    out.mkdir(parents=True, exist_ok=True)
    (out / "rlpc.json").unlink(missing_ok=True)
    examples = training_examples(recipe, limit=recipe.warmup.bootstrap_rows)
    model, tok = fresh_model(recipe, device)
    rows = prepare_rows(examples, tok, recipe)
    rates = recipe.extractive.rates
    make_labels = WARMUP_LABELS[recipe.extractive.warmup_labels]
    labels = {(i, r): make_labels(row, r) for i, row in enumerate(rows) for r in rates}
    s = recipe.sft
    _check_schedule("sft", s.lr_scheduler_type)
    per_epoch = math.ceil(len(rows) / s.per_device_train_batch_size)
    total = s.max_steps if s.max_steps > 0 else max(1, int(round(s.num_train_epochs * per_epoch)))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=0.0)
    log_path = out / "sft_log.jsonl"
    log_path.unlink(missing_ok=True)
    write_text(out / "recipe.yaml", recipe.to_yaml())
    started = time.time()
    model.eval()  # BERT's dropout off: the warm-up fits the policy GRPO then samples from, deterministically
    losses = []
    bar = tqdm(range(total), desc="extractive warm-up", unit="step")
    for step in bar:
        idx = data_positions(step, s.per_device_train_batch_size, len(rows), recipe.data_seed)
        rate = rates[step % len(rates)]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, s.learning_rate, s.warmup_steps, s.lr_scheduler_type)
        batch = [rows[i] for i in idx]
        logits = forward_rows(model, batch, device)
        loss = 0.0
        for i, row, z in zip(idx, batch, logits):
            free = torch.from_numpy(~row.protected).to(device)
            budget = max(1, int(round(rate * row.original_tokens)))
            room = budget - float(row.costs[row.protected].sum())
            b = keep_offset(z.detach().cpu().numpy(), row.costs, ~row.protected, room)
            target = torch.from_numpy(labels[(i, rate)].astype(np.float32)).to(device)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(z + b, target, reduction="none")
            loss = loss + (bce * free).sum() / free.sum().clamp(min=1)
        loss = loss / len(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if (step + 1) % s.logging_steps == 0 or step + 1 == total:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step + 1, "loss": float(np.mean(losses[-s.logging_steps:])),
                                     "learning_rate": opt.param_groups[0]["lr"], "rate": rate}) + "\n")
    model.eval()
    save_compressor_folder(model, recipe, out)
    summary = {"recipe_name": recipe.name, "policy_kind": "extractive", "base_model": recipe.policy.model,
               "labels": f"{recipe.extractive.warmup_labels} masks at rates {list(rates)}", "rows": len(rows), "steps": total,
               "train_loss": float(np.mean(losses[-max(1, per_epoch):])), "train_seconds": round(time.time() - started, 1),
               "seed": recipe.seed, "command": command_line()}
    write_json(out / "sft_summary.json", summary)
    write_text(out / "README.md", f"# rlpc extractive warm-up: {recipe.name}\n\nLoRA adapter + head over "
               f"`{recipe.policy.model}`, trained {total} steps on {recipe.extractive.warmup_labels} keep masks "
               f"({len(rows)} rows, rates {list(rates)}, seed {recipe.seed}); final loss {summary['train_loss']:.4f}. "
               "A starting point for `python -m training.grpo --init <this folder>`, not a measured compressor.\n")
    return summary


# ---------------------------------------------------------------- group-relative policy gradients

class RewardBank:
    """The recipe's reward functions and weights, built once per target rate (the compression reward peaks at
    the step's rate); evaluator and feedback models are shared across rates by the registry. A constrained
    reward (``constraint.enabled``) is one :class:`~training.constraint.FidelityConstraint` for the whole run,
    whatever the rate: its multiplier must see every step."""

    def __init__(self, recipe: Recipe, device: str):
        self.recipe, self.device = recipe, device
        self._built: dict[float, tuple[list[Callable], list[float]]] = {}
        self.constraint = None
        if recipe.constraint.enabled and recipe.constraint.reward == "compression":
            raise TrainingError("constraint.reward='compression' cannot be a fidelity constraint (its target moves "
                                "with the rate); constrain a fidelity reward such as answer_likelihood")

    def get(self, rate: float) -> tuple[list[Callable], list[float]]:
        from rlpc_core import build_rewards
        from training.constraint import FidelityConstraint

        if rate not in self._built:
            specs = self.recipe.reward_specs(self.device)
            for spec in specs:
                if spec["name"] == "compression":
                    spec["kwargs"]["target_rate"] = rate
            funcs, weights = build_rewards(specs)
            c = self.recipe.constraint
            if c.enabled:
                i = [spec["name"] for spec in specs].index(c.reward)
                if self.constraint is None:
                    self.constraint = FidelityConstraint.from_recipe(funcs[i], c, base_weight=weights[i])
                    self.constraint.index = i
                funcs[i] = self.constraint  # not rate-dependent (compression is refused above)
            self._built[rate] = (funcs, weights)
        funcs, weights = self._built[rate]
        if self.constraint is not None:
            weights = list(weights)
            weights[self.constraint.index] = self.constraint.weight  # lambda from the steps before this one
        return funcs, weights


def score_masks(bank: RewardBank, rate: float, rows: Sequence[Row], masks: Sequence[np.ndarray],
                metrics: dict[str, float]) -> np.ndarray:
    """Weighted reward ``[prompts, G]`` of every mask; per-reward means are added to ``metrics``."""
    from rlpc_core.rewards import prefetch_rewards
    from rlpc_core.words import join_kept

    funcs, weights = bank.get(rate)
    texts, cols = [], {"original": [], "answer": [], "task": [], "question": []}
    for row, group in zip(rows, masks):
        for m in group:
            texts.append(join_kept(row.words, m))
            cols["original"].append(row.example.text)
            cols["answer"].append(gold_of(row.example))
            cols["task"].append(row.example.task)
            cols["question"].append(row.query)
    total = np.zeros(len(texts))

    def log_metric(name: str, value: float) -> None:
        metrics[name] = float(value)

    # The reader's likelihood and its answer on each sample, one prefill for both, before the rewards read them.
    prefetch_rewards(funcs, cols["original"], texts, **cols)
    for fn, w in zip(funcs, weights):
        values = fn(prompts=cols["original"], completions=texts, log_metric=log_metric, **cols)
        arr = np.array([np.nan if v is None else float(v) for v in values])
        if np.isfinite(arr).any():
            metrics[f"rewards/{fn.__name__}"] = float(np.nanmean(arr))
        total += w * np.nan_to_num(arr, nan=0.0)
    return total.reshape(len(rows), -1)


def _ratio(rows: Sequence[Row], masks: Sequence[np.ndarray]) -> float:
    return float(np.mean([(m * r.costs).sum(axis=1).mean() / max(1, r.original_tokens) for r, m in zip(rows, masks)]))


def grpo_step(model: Any, ref_logits: dict[int, np.ndarray], ref_model: Any, rows: Sequence[Row], idx: Sequence[int],
              bank: RewardBank, recipe: Recipe, step: int, optimizer: Any, params: Sequence[Any], device: str) -> dict[str, Any]:
    """One step: rollouts, rewards, group advantages, ``num_iterations`` clipped updates. Returns the metrics."""
    import torch

    g = recipe.grpo
    x = recipe.extractive
    rng = np.random.default_rng([recipe.seed, step])
    rate = float(x.rates[int(rng.integers(len(x.rates)))])
    batch = [rows[i] for i in idx]

    # -- rollouts at the calibrated offset of the current policy
    with torch.no_grad():
        old = [z.cpu().numpy().astype(np.float64) for z in forward_rows(model, batch, device)]
        missing = [i for i in idx if i not in ref_logits]
        if missing and ref_model is not None:
            for i, z in zip(missing, forward_rows(ref_model, [rows[i] for i in missing], device)):
                ref_logits[i] = z.cpu().numpy().astype(np.float64)
    offsets, masks, ref_offsets, blocks = [], [], [], []
    sel = _selection_config(recipe)
    for row, z, i in zip(batch, old, idx):
        budget = max(1, int(round(rate * row.original_tokens)))
        plan = None
        if x.action == "blocks" and not row.math:
            from rlpc_core.selection import plan_blocks

            plan = plan_blocks(row.words, row.costs, z, row.protected, row.verbatim, row.structure, row.units,
                               query=row.query, config=sel)
        if plan is not None:
            roll = block_rollout(plan, z, budget, g.num_generations, rng, g.temperature)
            roll["n_blocks"] = plan.n_blocks
            blocks.append(roll)
            offsets.append(roll["offset"])
            masks.append(roll["words"])
            if ref_model is not None:
                s_ref = block_scores(plan, ref_logits[i], roll["idx"], roll["blk"])
                ref_offsets.append(keep_offset(s_ref, plan.short_cost, np.ones(plan.n_blocks, dtype=bool), roll["room"]))
            continue
        blocks.append(None)
        free = ~row.protected
        room = budget - float(row.costs[row.protected].sum())
        b = keep_offset(z / g.temperature, row.costs, free, room)
        offsets.append(b)
        masks.append(sample_masks(z, b, row.protected, g.num_generations, rng, g.temperature))
        if ref_model is not None:
            ref_offsets.append(keep_offset(ref_logits[i], row.costs, free, room))
    metrics: dict[str, Any] = {"rate": rate}
    rewards = score_masks(bank, rate, batch, masks, metrics)
    adv = group_advantages(rewards, scale=g.scale_rewards != "none")
    metrics["reward"] = float(rewards.mean())
    metrics["reward_std"] = float(rewards.std(axis=1, ddof=1).mean())
    metrics["compression_ratio"] = _ratio(batch, masks)
    if any(bl is not None for bl in blocks):
        metrics["block_rows"] = sum(bl is not None for bl in blocks)

    # -- clipped updates (old log-probs fixed at the rollout policy). The model stays in eval mode: BERT's dropout
    # would make the updated policy a different one from the policy that sampled (and the ratio noise).
    t = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt, device=device)  # noqa: E731

    def action_logp(k: int, z: Any) -> tuple[Any, Any]:
        """``(per-action log-probs [g, actions], free actions)`` of row ``k``'s samples under logits ``z``."""
        bl = blocks[k]
        if bl is None:
            return (mask_log_probs(z / g.temperature, offsets[k], t(masks[k])), t(~batch[k].protected, torch.bool))
        s_blocks = block_scores(bl["plan"], z, bl["idx"], bl["blk"])
        return (mask_log_probs(s_blocks / g.temperature, offsets[k], t(bl["chosen"])),
                torch.ones(bl["n_blocks"], dtype=torch.bool, device=device))

    logp_old = [action_logp(k, t(z))[0] for k, z in enumerate(old)]
    losses, clips, kls = [], [], []
    for _ in range(g.num_iterations):
        new = forward_rows(model, batch, device)
        loss = 0.0
        for k, (row, z) in enumerate(zip(batch, new)):
            logp, free = action_logp(k, z)
            pg, clip = clipped_surrogate(logp, logp_old[k], t(adv[k]), free, g.epsilon)
            term = pg
            if ref_model is not None and g.beta > 0:
                bl = blocks[k]
                if bl is None:
                    kl = bernoulli_kl(z, offsets[k], t(ref_logits[idx[k]]), ref_offsets[k], free)
                else:  # per block, on block scores
                    kl = bernoulli_kl(block_scores(bl["plan"], z, bl["idx"], bl["blk"]), offsets[k],
                                      t(block_scores(bl["plan"], ref_logits[idx[k]], bl["idx"], bl["blk"])),
                                      ref_offsets[k], free)
                term = term + g.beta * kl
                kls.append(float(kl.detach()))
            loss = loss + term
            clips.append(float(clip.detach()))
        loss = loss / len(batch)
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, g.max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
    metrics.update({"loss": float(np.mean(losses)), "clip_fraction": float(np.mean(clips)),
                    "kl": float(np.mean(kls)) if kls else None, "grad_norm": float(grad_norm)})
    if bank.constraint is not None:
        metrics["lambda"] = bank.constraint.lam
        metrics["fidelity_weight"] = bank.constraint.weight
        metrics["observed"] = bank.constraint.observed
    return metrics


def _selection_config(recipe: Recipe) -> Any:
    """The selection settings of the compressor this recipe trains (the one it will be used as)."""
    return recipe.compressor_config().selection


def _log_row(step: int, metrics: dict[str, Any], lr: float) -> dict[str, Any]:
    rewards = {k[len("rewards/"):]: v for k, v in metrics.items() if k.startswith("rewards/")}
    row = {"step": step, "rewards": rewards, "learning_rate": lr, "time": round(time.time(), 1)}
    row.update({k: v for k, v in metrics.items() if not k.startswith("rewards/")})
    return row


def save_checkpoint(out: Path, step: int, model: Any, optimizer: Any, recipe: Recipe, bank: RewardBank) -> Path:
    from rlpc_core.policies.extractive import save_weights

    folder = out / f"checkpoint-{step}"
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    save_weights(model, weights_info(recipe), folder)
    save_optimizer(optimizer, folder / OPTIMIZER_FILE)
    state = {"step": step, "constraint": bank.constraint.state_dict() if bank.constraint is not None else None}
    write_json(folder / STATE_FILE, state)
    mark_complete(folder)  # last: only now does the folder count
    rotate(out, recipe.grpo.save_total_limit)
    return folder


def _check_schedule(stage: str, schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise TrainingError(f"{stage}.lr_scheduler_type={schedule!r}: the extractive trainer follows {', '.join(SCHEDULES)}; "
                            "use cosine")


def check_extractive_grpo(g: Any) -> None:
    """The grpo settings the extractive trainer reads, beyond trl's own checks."""
    if g.per_device_train_batch_size % g.num_generations:
        raise TrainingError(f"grpo.per_device_train_batch_size={g.per_device_train_batch_size} is not a multiple of "
                            f"num_generations={g.num_generations}: it counts masks per step (prompts x G); use e.g. "
                            f"{2 * g.num_generations}")
    if g.scale_rewards not in ("group", "none"):
        raise TrainingError(f"grpo.scale_rewards={g.scale_rewards!r}: the extractive trainer scales within each "
                            "prompt's group (group) or not at all (none, Dr. GRPO); use one of those")
    if g.max_steps < 1:
        raise TrainingError(f"grpo.max_steps={g.max_steps}: the extractive trainer runs a number of steps; set "
                            "grpo.max_steps (e.g. 150)")
    _check_schedule("grpo", g.lr_scheduler_type)


def train_grpo(recipe: Recipe, out: Path, init: Optional[Path], resume_from: Optional[Path]) -> dict[str, Any]:
    """The whole run (see the module docstring); returns the training summary."""
    import torch
    from tqdm.auto import tqdm

    device = policy_device(recipe.grpo)
    g, x = recipe.grpo, recipe.extractive
    check_extractive_grpo(g)
    prompts_per_step = g.per_device_train_batch_size // g.num_generations
    torch.manual_seed(recipe.seed)
    if init is not None:
        model, tok = load_trainable(init, device)
    else:
        say("no --init: starting from a fresh adapter and head (run python -m training.sft first for a warm start)")
        model, tok = fresh_model(recipe, device)
    ref_model = None
    if g.beta > 0:
        import copy

        ref_model = copy.deepcopy(model).eval().requires_grad_(False)  # the starting policy, frozen
    examples = training_examples(recipe)
    rows = prepare_rows(examples, tok, recipe)
    say(f"training rows: {len(rows)} from {recipe.data.dataset} {recipe.data.split} (seed {recipe.data_seed})")
    bank = RewardBank(recipe, device)
    funcs, _ = bank.get(float(x.rates[0]))
    precompute_original_side(funcs, [{"task": r.example.task, "original": r.example.text,
                                      "answer": gold_of(r.example), "question": r.query} for r in rows])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=g.learning_rate, weight_decay=0.0)
    start = 0
    if resume_from is not None:
        from rlpc_core.policies.extractive import load_weights_into

        load_weights_into(model, resume_from)
        load_optimizer(optimizer, resume_from / OPTIMIZER_FILE)
        state = json.loads((resume_from / STATE_FILE).read_text())
        start = int(state["step"])
        if bank.constraint is not None and state.get("constraint"):
            bank.constraint.load_state_dict(state["constraint"])
        say(f"resuming from {resume_from} (step {start})")
    model.eval()  # dropout off for rollouts and updates alike (gradients flow in eval mode)
    ref_logits: dict[int, np.ndarray] = {}
    log_path = out / LOG
    started = time.time()
    bar = tqdm(range(start, g.max_steps), desc="extractive GRPO", unit="step", initial=start, total=g.max_steps)
    for step in bar:
        lr = lr_at(step, g.max_steps, g.learning_rate, g.warmup_steps, g.lr_scheduler_type)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = data_positions(step, prompts_per_step, len(rows), recipe.data_seed)
        metrics = grpo_step(model, ref_logits, ref_model, rows, idx, bank, recipe, step, optimizer, params, device)
        done = step + 1
        if done % g.logging_steps == 0 or done == g.max_steps:
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(_log_row(done, metrics, lr)) + "\n")
        post = {"reward": f"{metrics['reward']:.3f}", "ratio": f"{metrics['compression_ratio']:.2f}"}
        if metrics.get("kl") is not None:
            post["kl"] = f"{metrics['kl']:.4f}"
        bar.set_postfix(post, refresh=False)
        if done % g.save_steps == 0 and done < g.max_steps:
            save_checkpoint(out, done, model, optimizer, recipe, bank)
    seconds = time.time() - started
    model.eval()
    save_compressor_folder(model, recipe, out)
    from training.card import final_means

    summary = {
        "recipe_name": recipe.name, "policy_kind": "extractive", "base_model": recipe.policy.model,
        "dtype": "float32", "init": str(init) if init else None, "dataset": recipe.data.dataset,
        "split": recipe.data.split, "train_rows": len(rows), "data_seed": recipe.data_seed, "seed": recipe.seed,
        "target_rate": list(x.rates), "action": x.action, "rewards": ", ".join(f"{r.name} ({r.weight:g})" for r in recipe.rewards),
        "constraint": (f"on `{recipe.constraint.reward}`: target {recipe.constraint.target}; final lambda "
                       f"{bank.constraint.lam:.3f}" if bank.constraint is not None else "off"),
        "steps": g.max_steps, "steps_done": g.max_steps, "steps_this_session": g.max_steps - start,
        "num_generations": g.num_generations, "prompts_per_step": prompts_per_step, "processes": 1,
        "device": device, "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(1, g.max_steps - start), 3),
        "final_means": final_means(read_log(log_path)), "lambda": bank.constraint.lam if bank.constraint else None,
        "versions": f"torch {torch.__version__}", "command": command_line(),
    }
    write_json(out / SUMMARY, summary)
    plot_reward_curves(read_log(log_path), out / CURVES, title=recipe.name)
    from training.card import write_card

    write_card(out)
    return summary


__all__ = ["bernoulli_kl", "block_rollout", "block_segments", "clipped_surrogate", "data_positions", "group_advantages",
           "keep_offset", "lr_at", "mask_log_probs", "sample_masks", "segment_mean", "train_grpo", "warmup"]
