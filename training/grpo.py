"""GRPO training of the rewriting policy with trl's GRPOTrainer and the rlpc reward registry.

    python -m training.grpo --recipe smollm2-cpu-gsm8k --init runs/smollm2-sft --out runs/smollm2-grpo
    python -m training.grpo --out runs/smollm2-grpo --resume            # continue a killed run
    accelerate launch --config_file training/recipes/accelerate/multi_gpu.yaml \\
        -m training.grpo --recipe phi3-gsm8k --init runs/phi3-sft --out runs/phi3-grpo

What a run does, in order:

1. builds the recipe (``--recipe`` + ``--set key=value`` + any GRPOConfig flag given, e.g. ``--max-steps``,
   ``--learning_rate``, ``--seed``; ``--help`` lists them) and refuses held-out
   splits; an extractive recipe (``--policy extractive``) goes to its own trainer, :mod:`training.extractive`,
   with the same run folder, checkpoint, resume, log, curves and card conventions;
2. turns the training rows into trl's conversational prompt dataset: ``prompt`` is
   :func:`rlpc_core.policy_messages` (the prompt inference uses, with the Compressor's own word budget at the
   target rate), plus the columns the rewards read: ``original``, ``answer`` (GSM8K's solution), ``task``;
3. builds the rewards (:func:`rlpc_core.build_rewards`) with their weights; the reward named by
   ``constraint.reward`` is wrapped in :class:`training.constraint.FidelityConstraint` (its weight follows a
   Lagrange multiplier). Rewards score the rewrite the Compressor would use (``clean_rewrite`` applied: no
   preamble), except ``format``, which judges the raw output so chatter is penalised;
4. computes the evaluator's outputs on the ORIGINAL questions once, before training (progress bar), into the
   evaluator's disk cache, so every step pays only for the compressed side;
5. trains (``--init``: continue the SFT adapter, with trl's KL reference the SFT start; else a fresh LoRA),
   logging per-reward means (trl) and ``OUT/log.jsonl`` (one line per logging step: step, each reward's mean,
   total reward, KL, lambda); every ``grpo.save_steps`` a ``checkpoint-N`` that counts only once complete
   (:mod:`training.checkpoints`), which ``--resume`` continues from;
6. writes the adapter and ``rlpc.json`` into ``OUT`` (``Compressor.from_pretrained(OUT)`` loads it),
   ``reward_curves.png``, ``training_summary.json`` and the model card ``README.md`` (regenerate it with the
   held-out results: ``python -m training.card OUT``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from training.card import LOG, RUN_FILE, SUMMARY, write_card
from training.checkpoints import (checkpoint_step, checkpoints, latest_complete, mark_complete, remove_incomplete,
                                  rotate)
from training.common import (command_line, gold_of, is_main_process, load_policy, lora_config, policy_device,
                             precompute_original_side, PromptBuilder, quiet_libraries, save_compressor, say, training_examples,
                             TrainingError, write_json, write_text)
from training.data import DataError
from training.recipe import Recipe, RecipeError, parse_yaml, recipe_from_args, training_parser

CONSTRAINT_FILE = "rlpc_constraint.json"


# ---------------------------------------------------------------- data

def grpo_rows(examples: Sequence[Any], builder: PromptBuilder) -> list[dict[str, Any]]:
    """trl's conversational prompt rows, with the columns the rewards read (trl passes every column to them)."""
    with_question = any(ex.task == "qa" for ex in examples)
    rows = []
    for ex in examples:
        query = ex.question if ex.task == "qa" else None
        row = {"prompt": builder.messages(ex.text, query=query), "original": ex.text, "answer": gold_of(ex),
               "task": ex.task}
        if with_question:
            row["question"] = query
        rows.append(row)
    return rows


# ---------------------------------------------------------------- rewards

def on_clean_text(fn: Callable[..., list]) -> Callable[..., list]:
    """Score the rewrite the Compressor would use: the completion after ``clean_rewrite`` (no preamble, quotes)."""
    from rlpc_core import clean_rewrite, completion_text

    @functools.wraps(fn)  # keeps the name trl logs and the reward's settings (evaluator, task, ...)
    def reward(prompts, completions, **kwargs):
        return fn(prompts, [clean_rewrite(completion_text(c)) for c in completions], **kwargs)

    if hasattr(fn, "reader_requests"):  # what the reward will ask its reader: about the cleaned rewrite too
        reward.reader_requests = lambda prompts, completions, **kwargs: fn.reader_requests(
            prompts, [clean_rewrite(completion_text(c)) for c in completions], **kwargs)
    return reward


def prefetching(funcs: Sequence[Callable[..., list]]) -> list[Callable[..., list]]:
    """trl calls the rewards one after another; the first one now also computes, in one pass, what every reward
    will ask its reader (:func:`rlpc_core.rewards.prefetch_rewards`: one prefill per prompt serves a likelihood
    and a reply), and the others read it from the cache."""
    from rlpc_core.rewards import prefetch_rewards

    if not any(hasattr(fn, "reader_requests") for fn in funcs):
        return list(funcs)
    first, everyone = funcs[0], list(funcs)

    @functools.wraps(first)
    def reward(prompts, completions, **kwargs):
        prefetch_rewards(everyone, prompts, completions, **kwargs)
        return first(prompts, completions, **kwargs)

    return [reward, *funcs[1:]]


def build_reward_funcs(recipe: Recipe, device: str) -> tuple[list[Callable], list[float], Optional[Any]]:
    """``(reward_funcs, reward_weights, constraint)`` for GRPOTrainer from the recipe."""
    from rlpc_core import build_rewards
    from training.constraint import FidelityConstraint

    funcs, weights = build_rewards(recipe.reward_specs(device))
    funcs = prefetching([fn if fn.__name__ == "format" else on_clean_text(fn) for fn in funcs])
    constraint = None
    if recipe.constraint.enabled:
        i = [item.name for item in recipe.rewards].index(recipe.constraint.reward)
        constraint = FidelityConstraint.from_recipe(funcs[i], recipe.constraint, base_weight=weights[i])
        funcs[i] = constraint
        constraint.index = i
    return funcs, weights, constraint


# ---------------------------------------------------------------- trainer pieces

def make_trainer_class():
    """GRPOTrainer whose checkpoints count only once complete, carrying the constraint's state."""
    from trl import GRPOTrainer

    class RLPCGRPOTrainer(GRPOTrainer):
        rlpc_constraint = None

        def _save_checkpoint(self, model, trial):
            limit = self.args.save_total_limit
            self.args.save_total_limit = None  # rotate after the new checkpoint is marked complete, not before
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self.args.save_total_limit = limit
            run_dir = Path(self._get_output_dir(trial=trial))
            folder = run_dir / f"checkpoint-{self.state.global_step}"
            if self.args.should_save and self.rlpc_constraint is not None:
                write_json(folder / CONSTRAINT_FILE, self.rlpc_constraint.state_dict())
            self.accelerator.wait_for_everyone()  # every process's RNG state is on disk
            if self.args.should_save:
                mark_complete(folder)  # last: only now does the folder count as a checkpoint
                rotate(run_dir, limit)

        def create_model_card(self, *args, **kwargs):
            pass  # the run's own card (training.card) is written at the end

    return RLPCGRPOTrainer


def make_callbacks(out: Path):
    from transformers import TrainerCallback
    from transformers.trainer_callback import ProgressCallback

    log_path = out / LOG

    class JsonlLog(TrainerCallback):
        """One line per logging step: step, each reward's mean, total reward, KL, lambda (main process)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return
            rewards = {k[len("rewards/"):-len("/mean")]: v for k, v in logs.items()
                       if k.startswith("rewards/") and k.endswith("/mean")}
            row = {"step": state.global_step, "epoch": logs.get("epoch"), "rewards": rewards,
                   "reward": logs.get("reward"), "reward_std": logs.get("reward_std"), "kl": logs.get("kl"),
                   "lambda": logs.get("constraint/lambda"), "fidelity_weight": logs.get("constraint/weight"),
                   "observed": logs.get("constraint/observed"), "compression_ratio": logs.get("compression_ratio"),
                   "completion_length": logs.get("completions/mean_length"), "loss": logs.get("loss"),
                   "learning_rate": logs.get("learning_rate"), "time": round(time.time(), 1)}
            with open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    class RewardProgress(ProgressCallback):
        """trl's progress bar, with reward / KL / lambda as its postfix instead of a printed dict per step."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or self.training_bar is None or not logs:
                return
            if "reward" in logs:
                post = {"reward": f"{logs['reward']:.3f}"}
                if logs.get("kl") is not None:
                    post["kl"] = f"{logs['kl']:.4f}"
                if logs.get("constraint/lambda") is not None:
                    post["λ"] = f"{logs['constraint/lambda']:.3f}"
                self.training_bar.set_postfix(post, refresh=False)
            elif "train_runtime" in logs:
                self.training_bar.write(f"train_runtime {logs['train_runtime']:.1f} s")

    return JsonlLog(), RewardProgress()


# ---------------------------------------------------------------- run folder

def prepare_run(args: argparse.Namespace) -> tuple[Recipe, Optional[Path], Optional[Path]]:
    """The recipe, the ``--init`` folder and the checkpoint to resume from (read-only: nothing is written)."""
    out: Path = args.out
    saved_recipe = out / "recipe.yaml"
    run_info = json.loads((out / RUN_FILE).read_text()) if (out / RUN_FILE).is_file() else {}
    if args.resume:
        if args.recipe is None and not saved_recipe.is_file():
            raise TrainingError(f"--resume: {str(out)!r} holds no run to resume (no recipe.yaml); start one with "
                                "--recipe, or point --out at the folder of the killed run")
        data = parse_yaml(saved_recipe.read_text()) if args.recipe is None else None
        recipe = recipe_from_args(args, "grpo", data=data)
        init = args.init or (Path(run_info["init"]) if run_info.get("init") else None)
        resume_from = latest_complete(out)
    else:
        if checkpoints(out) or (out / LOG).is_file():
            raise TrainingError(f"--out {str(out)!r} already holds a run (checkpoints or {LOG}); pass --resume to "
                                "continue it, or choose a new --out")
        if args.recipe is None:
            raise TrainingError("no recipe given; pass --recipe NAME_OR_PATH (e.g. smollm2-cpu-gsm8k)")
        recipe = recipe_from_args(args, "grpo")
        init, resume_from = args.init, None
    return recipe, init, resume_from


def prepare_folder(out: Path, recipe: Recipe, init: Optional[Path], resume_from: Optional[Path], resume: bool) -> None:
    """The run folder before training: half-written checkpoints removed, the log cut back to the checkpoint
    resumed from, the recipe and the command recorded (main process only)."""
    out.mkdir(parents=True, exist_ok=True)
    for p in remove_incomplete(out):
        say(f"removed incomplete checkpoint {p.name} (killed while saving)")
    if resume_from is not None:
        _truncate_log(out / LOG, checkpoint_step(resume_from))
        say(f"resuming from {resume_from} (step {checkpoint_step(resume_from)})")
    elif resume:
        say("no complete checkpoint to resume from: starting at step 0")
        (out / LOG).unlink(missing_ok=True)
    # A folder with rlpc.json is a finished compressor; while this run trains, the folder is not one.
    (out / "rlpc.json").unlink(missing_ok=True)
    write_text(out / "recipe.yaml", recipe.to_yaml())
    info = {"init": str(init) if init else None, "recipe": recipe.name, "command": command_line()}
    earlier = json.loads((out / RUN_FILE).read_text()) if resume_from is not None and (out / RUN_FILE).is_file() else {}
    if earlier.get("command"):  # a resumed run keeps the command that started it (the card shows both)
        info["resumed_with"] = earlier.get("resumed_with", []) + [info["command"]]
        info["command"] = earlier["command"]
    write_json(out / RUN_FILE, info)


def _truncate_log(path: Path, last_step: int) -> None:
    """Drop log lines after the checkpoint being resumed (those steps are redone)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line)["step"] <= last_step]
    write_text(path, "".join(line + "\n" for line in keep))


def grpo_config(recipe: Recipe, out: Path, weights: Sequence[float]) -> Any:
    """trl's GRPOConfig: the recipe's grpo section as written, plus what the run owns (folder, seed, weights)."""
    try:
        return recipe.grpo.build(out, seed=recipe.seed, reward_weights=list(weights))
    except ValueError as err:  # a check that depends on this launch (the process count, the device)
        raise TrainingError(f"grpo: {err} (trl's GRPOConfig check, for this launch); fix the grpo section or the "
                            "launch") from None


# ---------------------------------------------------------------- the run

def check_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` runs ONE process (accelerate's simple launcher starts several
    CPU processes only through mpirun, with --mpirun_hostfile): refuse instead of silently training on one."""
    env = os.environ
    if (env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env and "WORLD_SIZE" not in env
            and not any(k in env for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"))):
        raise TrainingError("accelerate launch --cpu --num_processes N started a single process (accelerate runs "
                            "several CPU processes only through mpirun); use `accelerate launch --multi_gpu "
                            "--num_processes N -m training.grpo ...` (torchrun; on a machine without GPUs the "
                            "processes talk over gloo), or add --mpirun_hostfile")


def train(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset

    check_launch()
    recipe, init, resume_from = prepare_run(args)
    out: Path = args.out
    device = policy_device(recipe.grpo)

    if recipe.policy.kind == "extractive":  # our own group-relative trainer: trl has none for keep-masks
        from training.extractive import train_grpo

        prepare_folder(out, recipe, init, resume_from, args.resume)
        return train_grpo(recipe, out, init, resume_from)

    # Settings first (GRPOConfig starts the distributed state), then the run folder, main process first.
    _, base_weights = _weights_only(recipe)
    config = grpo_config(recipe, out, base_weights)
    with config.main_process_first(desc="run folder"):
        if is_main_process():
            prepare_folder(out, recipe, init, resume_from, args.resume)

    examples = training_examples(recipe)
    builder = PromptBuilder(recipe)
    rows = grpo_rows(examples, builder)
    dataset = Dataset.from_list(rows)
    say(f"training rows: {len(rows)} from {recipe.data.dataset} {recipe.data.split} (seed {recipe.data_seed})")

    funcs, weights, constraint = build_reward_funcs(recipe, device)
    with config.main_process_first(desc="evaluator cache"):
        precompute_original_side(funcs, rows)

    model, tok = load_policy(recipe, init=init)
    peft_config = None if init is not None else lora_config(recipe)
    trainer_cls = make_trainer_class()
    jsonl_log, progress = make_callbacks(out)
    trainer = trainer_cls(model=model, reward_funcs=funcs, args=config, train_dataset=dataset,
                          processing_class=tok, peft_config=peft_config, callbacks=[jsonl_log])
    from transformers.trainer_callback import ProgressCallback

    if trainer.pop_callback(ProgressCallback) is not None:  # the stock bar prints a dict per step: use ours
        trainer.add_callback(progress)
    if constraint is not None:
        trainer.rlpc_constraint = constraint
        index = constraint.index
        constraint.bind(lambda w: trainer.reward_weights.__setitem__(index, w))
        if resume_from is not None and (resume_from / CONSTRAINT_FILE).is_file():
            constraint.load_state_dict(json.loads((resume_from / CONSTRAINT_FILE).read_text()))

    started, start_step = time.time(), checkpoint_step(resume_from) if resume_from else 0
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.time() - started
    steps_run = trainer.state.global_step - start_step

    trainer.save_model(str(out))  # the adapter (every distributed set-up handled by the Trainer)
    if trainer.is_world_process_zero():
        shutil.rmtree(out / "ref", ignore_errors=True)  # trl's frozen copy of the --init adapter: not part of the result
        summary = _summary(recipe, init, trainer, examples, funcs, weights, constraint, seconds, steps_run, result)
        write_json(out / SUMMARY, summary)
        write_card(out, getattr(args, "eval_results", None))
        save_compressor(out, recipe)  # rlpc.json last: its presence means the folder is complete
        return summary
    return {}


def _weights_only(recipe: Recipe) -> tuple[list[str], list[float]]:
    return [r.name for r in recipe.rewards], [r.weight for r in recipe.rewards]


def _summary(recipe, init, trainer, examples, funcs, weights, constraint, seconds, steps_run, result) -> dict:
    import peft
    import torch
    import transformers
    import trl

    from training.card import final_means, read_log

    g = trainer.args
    world = trainer.accelerator.num_processes
    rewards = ", ".join(f"{getattr(f, '__name__', '?')} ({w:g})" for f, w in zip(funcs, weights))
    c = recipe.constraint
    constraint_text = (f"on `{c.reward}`: target {c.target}, eta {c.eta}, window {c.window}; final lambda "
                       f"{constraint.lam:.3f} (weight {constraint.weight:.3f})" if constraint is not None else "off")
    return {
        "recipe_name": recipe.name, "base_model": recipe.policy.model, "dtype": recipe.policy.dtype,
        "init": str(init) if init else None, "dataset": recipe.data.dataset, "split": recipe.data.split,
        "train_rows": len(examples), "data_seed": recipe.data_seed, "seed": recipe.seed,
        "target_rate": recipe.target_rate, "rewards": rewards, "constraint": constraint_text,
        "steps": g.max_steps, "steps_done": trainer.state.global_step, "steps_this_session": steps_run,
        "num_generations": g.num_generations,
        "prompts_per_step": g.per_device_train_batch_size * world * g.gradient_accumulation_steps // g.num_generations,
        "processes": world, "device": str(trainer.accelerator.device),
        "train_seconds": round(seconds, 1), "seconds_per_step": round(seconds / steps_run, 3) if steps_run else None,
        "final_means": final_means(read_log(Path(trainer.args.output_dir) / LOG)),
        "lambda": constraint.lam if constraint is not None else None,
        "versions": f"trl {trl.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
                    f"torch {torch.__version__}",
        "command": command_line(),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = training_parser("grpo", prog="python -m training.grpo", description=__doc__.split("\n\n")[0])
    p.add_argument("--init", type=Path, default=None,
                   help="SFT output folder whose LoRA adapter GRPO continues (default: a fresh adapter)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest complete checkpoint (its recipe.yaml unless "
                        "--recipe is given)")
    p.add_argument("--eval-results", type=Path, default=None,
                   help="metrics.json of python -m training.evaluate to put in the model card")
    args = p.parse_args(argv)
    quiet_libraries()
    try:
        summary = train(args)
    except (RecipeError, TrainingError, DataError) as err:  # each names the value, the rule and the fix
        print(f"error: {err}", file=sys.stderr)
        return 2
    if summary:
        say(f"wrote {args.out}: {summary['steps_done']} steps, {summary['seconds_per_step']} s/step; "
            f"Compressor.from_pretrained({str(args.out)!r}) loads it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
