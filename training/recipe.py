"""Training recipes: one frozen :class:`Recipe`, loaded from YAML, changed from the command line, checked early.

A recipe is the one source of truth of a training run: the policy and its LoRA adapter, the training rows, the
rewards with their weights, the fidelity constraint, the SFT warm-up, GRPO's settings, the evaluator and the
feedback model. ``python -m training.sft`` and ``python -m training.grpo`` both read it; a run folder keeps a
copy (``recipe.yaml``) so a run can be resumed, compared and reproduced. Every value is checked when the recipe
is built, so a typo fails in a second with a ``ValueError`` that names the value, the rule and the fix, long
before a model is loaded::

    recipe = load_recipe("smollm2-cpu-gsm8k", overrides=["grpo.learning_rate=1e-5", "rewards.format.weight=0.5"])

``--set key=value`` uses dotted keys; list items are addressed by index (``rewards.0.weight``) or, for rewards,
by name (``rewards.fidelity.weight``); values are YAML (``1e-5``, ``true``, ``null``, ``[q_proj, v_proj]``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import yaml

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"

#: Rewards that ask the evaluator LLM; the recipe's ``evaluator`` section is their default ``evaluator`` setting.
EVALUATOR_REWARDS = ("answer_agreement", "answer_likelihood", "reader_accuracy")
#: Rewards that ask the feedback model; the recipe's ``feedback`` section is their default ``model`` setting.
FEEDBACK_REWARDS = ("fidelity",)


# ---------------------------------------------------------------- YAML that reads 5e-6 as a number

class _Loader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where ``5e-6`` (no dot) is a string; recipes mean the number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


# ---------------------------------------------------------------- checks shared by every section

class RecipeError(ValueError):
    """A recipe value breaks a rule; the message names the value, the rule and the fix."""


def _fail(path: str, value: Any, rule: str, fix: str) -> None:
    raise RecipeError(f"{path}={value!r} {rule}; {fix}")


def _positive(path: str, value: float, fix: str) -> None:
    if not value > 0:
        _fail(path, value, "must be > 0", fix)


def _at_least(path: str, value: int, lo: int, fix: str) -> None:
    if value < lo:
        _fail(path, value, f"must be >= {lo}", fix)


def _between(path: str, value: float, lo: float, hi: float, fix: str, *, lo_open: bool = False,
             hi_open: bool = False) -> None:
    ok = (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        _fail(path, value, f"must be in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}", fix)


def _choice(path: str, value: str, choices: Sequence[str], fix: str = "") -> None:
    if value not in choices:
        _fail(path, value, f"must be one of {', '.join(choices)}", fix or f"use e.g. {choices[0]!r}")


def _coerce(path: str, value: Any, kind: Any) -> Any:
    """Check ``value`` against a field's declared type (YAML ints are accepted for floats)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:  # Optional[X]
        if value is None:
            return None
        return _coerce(path, value, next(a for a in args if a is not type(None)))
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            _fail(path, value, "must be true or false", "write true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(path, value, "must be an integer", "write a whole number, e.g. 4")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            _fail(path, value, "must be a finite number", "write a number, e.g. 0.5 or 5e-6")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value:
            _fail(path, value, "must be a non-empty string", "write a name or a path")
        return value
    if origin is tuple:  # tuple[str, ...]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            _fail(path, value, "must be a list", "write a YAML list, e.g. [q_proj, v_proj]")
        return tuple(_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
    if origin in (dict, Mapping) or kind in (dict, Mapping):
        if not isinstance(value, Mapping):
            _fail(path, value, "must be a mapping", "write key: value pairs")
        return copy.deepcopy(dict(value))
    raise TypeError(f"no check for type {kind!r} of {path}")  # a programming error, not a user one


class _Section:
    """Builds a frozen section from a mapping: unknown keys named with a suggestion, every value type-checked."""

    _path = ""

    @classmethod
    def from_dict(cls, data: Any, path: Optional[str] = None):
        path = path if path is not None else cls._path
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise RecipeError(f"{path or 'recipe'}={data!r} must be a mapping of settings; write key: value pairs "
                             "under it")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            key = unknown[0]
            if _join(path, key) in RENAMED:
                raise RecipeError(f"recipe key {_join(path, key)!r} is now {RENAMED[_join(path, key)]}; rename it in "
                                  "the recipe")
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"unknown recipe key {_join(path, key)!r}{hint}: valid keys under {path or 'the top level'}"
                             f" are {', '.join(names)}")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            sub = _join(path, f.name)
            kind = hints[f.name]
            if isinstance(kind, type) and issubclass(kind, _Section):
                values[f.name] = kind.from_dict(data[f.name], sub)
            elif kind is TrlSettings:
                values[f.name] = TrlSettings.from_dict(f.name, data[f.name])
            elif f.name == "rewards":
                values[f.name] = _rewards_from(data[f.name], sub)
            else:
                values[f.name] = _coerce(sub, data[f.name], kind)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Section):
                value = value.to_dict()
            elif isinstance(value, TrlSettings):
                value = copy.deepcopy(dict(value))
            elif isinstance(value, tuple):
                value = [v.to_dict() if isinstance(v, _Section) else v for v in value]
            elif isinstance(value, dict):
                value = copy.deepcopy(value)
            out[f.name] = value
        return out


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


# ---------------------------------------------------------------- sections

@dataclass(frozen=True)
class LoraSection(_Section):
    """The LoRA adapter trained on the policy (peft ``LoraConfig``)."""

    _path = "policy.lora"
    #: Rank. 16 is plenty for a 135M model learning one rewriting skill; the reference used 64 on Phi-3-mini.
    r: int = 16
    #: Scale numerator (the update is scaled by alpha / r); 2 * r is the common choice, as in the reference.
    alpha: float = 32.0
    #: Dropout on the adapter's input; small, because GRPO's sampling is already noisy.
    dropout: float = 0.05
    #: Module names (suffixes) that get an adapter. Llama-style models (SmolLM2, TinyLlama) name all seven
    #: projections; Phi-3 fuses q/k/v into ``qkv_proj`` and gate/up into ``gate_up_proj`` (see phi3-gsm8k.yaml).
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    def __post_init__(self) -> None:
        _at_least("policy.lora.r", self.r, 1, "use e.g. 16")
        _positive("policy.lora.alpha", self.alpha, "use e.g. 2 * r")
        _between("policy.lora.dropout", self.dropout, 0.0, 1.0, "use e.g. 0.05", hi_open=True)
        if not self.target_modules:
            _fail("policy.lora.target_modules", list(self.target_modules), "must name at least one module",
                  "list the model's projection names, e.g. [q_proj, v_proj]")


@dataclass(frozen=True)
class PolicySection(_Section):
    """The compressor being trained."""

    _path = "policy"
    #: ``generative`` (a causal LM rewrites the prompt; trl's SFT and GRPO trainers) or ``extractive`` (a MiniLM
    #: token classifier over words; its own group-relative trainer, :mod:`training.extractive`).
    kind: str = "generative"
    #: Base model: an embedded alias, a Hugging Face id or a folder. Saved in the checkpoint's rlpc.json, so
    #: ``Compressor.from_pretrained`` loads the same base under the adapter.
    model: str = "smollm2-135m-instruct"
    #: Weights' dtype: float32 on CPUs (bfloat16 is ~3x slower there), bfloat16 on GPUs.
    dtype: str = "float32"
    #: Importance hints in the policy's prompt (``GenerativeConfig.hints``: none | list | markers).
    hints: str = "list"
    #: Share of words named in the hints (``GenerativeConfig.hint_share``; the reference marked 40%).
    hint_share: float = 0.4
    lora: LoraSection = field(default_factory=LoraSection)

    def __post_init__(self) -> None:
        _choice("policy.kind", self.kind, ("generative", "extractive"))
        from rlpc_core.models import EMBEDDED

        embedded = EMBEDDED.get(self.model)
        if self.kind == "extractive" and embedded is not None and embedded.kind == "causal-lm":
            _fail("policy.model", self.model, "is a causal LM, but the extractive policy is a token classifier over an "
                  "encoder", "use policy.model: all-minilm-l6-v2 (or an encoder's folder / hub id), e.g. the "
                  "minilm-extractive recipe")
        _choice("policy.dtype", self.dtype, ("float32", "bfloat16", "float16"), "float32 on CPU, bfloat16 on GPU")
        try:
            self.generative_config()
        except ValueError as err:  # GenerativeConfig's own check
            raise RecipeError(f"policy: {err}") from None

    def generative_config(self):
        """The :class:`rlpc_core.GenerativeConfig` that inference will use with this adapter."""
        from rlpc_core import GenerativeConfig

        return GenerativeConfig(model=self.model, hints=self.hints, hint_share=self.hint_share, dtype=self.dtype)


@dataclass(frozen=True)
class DataSection(_Section):
    """The training rows. Held-out splits are refused: benchmarks report on them."""

    _path = "data"
    #: ``gsm8k`` (or another name of :mod:`training.data`), a JSONL path, or ``hf:ORG/NAME[:CONFIG]``; several
    #: joined by ``+`` (``gsm8k+squad+nq``) are mixed, ``limit`` rows from each, shuffled together.
    dataset: str = "gsm8k"
    #: Split to train on. Named datasets must use ``train``: their test/validation rows are the held-out set.
    split: str = "train"
    #: Rows to use after a seeded shuffle (null: all). GRPO cycles through them; keep at least steps x prompts.
    limit: Optional[int] = 400
    #: Shuffle seed of the rows (null: the recipe's seed).
    seed: Optional[int] = None
    #: Folder of the named datasets (null: ``../shared/data`` beside the repository).
    data_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.limit is not None:
            _at_least("data.limit", self.limit, 1, "use a positive number of rows, or null for all")
        from training.data import NAMED

        for name in self.datasets:
            if name in NAMED and self.split != "train":
                _fail("data.split", self.split, f"is held-out data of {name!r}: training must never see rows "
                      "that the benchmarks report on", "train on split: train")

    @property
    def datasets(self) -> list[str]:
        """The dataset specs mixed in this run (``dataset`` split on ``+``)."""
        parts = [p.strip() for p in self.dataset.split("+")]
        if not all(parts):
            _fail("data.dataset", self.dataset, "has an empty part between '+' signs", "write e.g. gsm8k+squad")
        return parts


@dataclass(frozen=True)
class RewardItem(_Section):
    """One reward of trl's ``reward_funcs`` with its weight (``rlpc_core.rewards`` registry)."""

    _path = "rewards[]"
    #: A registered reward (compression, protected_coverage, format, fidelity, answer_likelihood,
    #: answer_agreement) or a dotted path ``package.module:function``.
    name: str = "compression"
    #: Weight in trl's weighted sum (``GRPOConfig.reward_weights``).
    weight: float = 1.0
    #: The reward factory's settings. ``target_rate`` (compression), ``evaluator`` (answer_*) and ``model``
    #: (fidelity) default to the recipe's ``target_rate``, ``evaluator`` and ``feedback`` sections.
    kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from rlpc_core import reward_names

        if self.name not in reward_names() and "." not in self.name and ":" not in self.name:
            close = difflib.get_close_matches(self.name, reward_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail("rewards[].name", self.name, f"is not a registered reward{hint}",
                  f"use one of {', '.join(reward_names())} or a dotted path 'package.module:function'")


def _rewards_from(data: Any, path: str) -> tuple[RewardItem, ...]:
    if isinstance(data, (str, Mapping)) or not isinstance(data, (list, tuple)):
        raise RecipeError(f"{path}={data!r} must be a list of {{name, weight, kwargs}} items; write a YAML list")
    items = []
    for i, item in enumerate(data):
        if isinstance(item, str):
            item = {"name": item}
        try:
            items.append(RewardItem.from_dict(item, f"{path}[{i}]"))
        except RecipeError as err:  # name the item: rewards[2].name, not rewards[].name
            raise RecipeError(str(err).replace("rewards[]", f"{path}[{i}]", 1)) from None
    return tuple(items)


@dataclass(frozen=True)
class ConstraintSection(_Section):
    """Fidelity as a constraint, not a fixed weight (:class:`training.constraint.FidelityConstraint`).

    A Lagrange multiplier lambda rises while the mean of ``reward`` over the recent reward batches is below
    ``target`` and falls (never below 0) while it is above: ``lambda <- clip(lambda + eta * (target - observed),
    0, lambda_max)``; the constrained reward's weight is ``weight * (1 + lambda)``.
    """

    _path = "constraint"
    #: Off: the constrained reward keeps its fixed weight (what compare_constraint.py compares against).
    enabled: bool = True
    #: The reward whose batch mean is the fidelity signal; it must be in ``rewards``. ``answer_likelihood`` is the
    #: dense proxy for evaluator agreement (small evaluators rarely solve GSM8K, so agreement itself is mostly 0 or
    #: noise on CPUs); ``answer_agreement`` (with ``agreement_weight: 1.0``) is the agreement itself, for GPUs.
    reward: str = "answer_likelihood"
    #: The level fidelity must stay at (0.97: "under 3% loss", the reference's claim made a constraint).
    target: float = 0.97
    #: Step size of lambda per reward batch. With a gap of 0.1 below target, 1.0 adds 0.1 per batch: lambda
    #: reaches ~1 (the fidelity weight doubles) in ~10 batches of persistent violation.
    eta: float = 1.0
    #: Starting lambda.
    lambda_init: float = 0.0
    #: Ceiling on lambda, so one bad stretch cannot drown every other reward for the rest of the run.
    lambda_max: float = 10.0
    #: Number of recent reward batches whose mean is the observed fidelity (smooths GRPO's sampling noise).
    window: int = 4

    def __post_init__(self) -> None:
        _between("constraint.target", self.target, 0.0, 1.0, "use e.g. 0.97", lo_open=True)
        _positive("constraint.eta", self.eta, "use e.g. 1.0")
        _positive("constraint.lambda_max", self.lambda_max, "use e.g. 10")
        _between("constraint.lambda_init", self.lambda_init, 0.0, self.lambda_max, "use 0.0")
        _at_least("constraint.window", self.window, 1, "use e.g. 4")


@dataclass(frozen=True)
class WarmupSection(_Section):
    """Where the supervised warm-up's (prompt, compressed) pairs come from (trl's SFTTrainer trains on them)."""

    _path = "warmup"
    #: ``bootstrap`` (the graph policy's compressions of training questions, kept where the rewards are high) or
    #: a JSONL path with ``original``, ``compressed`` (and optional ``question``) per line.
    pairs: str = "bootstrap"
    #: Training questions the graph policy compresses when bootstrapping (before filtering); the extractive
    #: warm-up's rows.
    bootstrap_rows: int = 200
    #: A bootstrapped pair is kept only if its compression reward (1.0 at the target rate) is at least this, its
    #: protected coverage is 1.0 and its format is clean.
    min_compression: float = 0.8

    def __post_init__(self) -> None:
        _at_least("warmup.bootstrap_rows", self.bootstrap_rows, 1, "use e.g. 200")
        _between("warmup.min_compression", self.min_compression, -1.0, 1.0, "use e.g. 0.8")


# ---------------------------------------------------------------- trl's own settings: the grpo and sft sections

#: The trl config class behind each section: a section's keys are that class's field names, unchanged, and trl
#: (with transformers' ``TrainingArguments``) checks them. ``python -m training.grpo --help`` lists them all.
TRL_CLASSES = {"grpo": "GRPOConfig", "sft": "SFTConfig"}
#: rlpc's values where they differ from trl's defaults: the reference design's (learning rate, G, beta), what 2
#: CPU cores need (float32, no activation checkpointing), and a log line per step. A recipe's own values win.
#: ``gradient_checkpointing``, not its newer name ``activation_checkpointing``: transformers 5.0 has only the first.
TRL_DEFAULTS = {
    "grpo": {"max_steps": 150, "learning_rate": 5e-6, "lr_scheduler_type": "cosine", "warmup_steps": 0.1,
             "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 48, "beta": 0.001,
             "save_steps": 25, "save_total_limit": 3, "logging_steps": 1, "bf16": False,
             "gradient_checkpointing": False, "report_to": "none", "disable_tqdm": False,
             "dataloader_num_workers": 0},
    "sft": {"num_train_epochs": 2.0, "learning_rate": 2e-4, "lr_scheduler_type": "cosine", "warmup_steps": 0.03,
            "per_device_train_batch_size": 4, "max_length": 512, "logging_steps": 5, "save_strategy": "no",
            "bf16": False, "gradient_checkpointing": False, "report_to": "none", "dataloader_num_workers": 0},
}
#: Fields a run sets from elsewhere, with where.
TRL_OWNED = {"output_dir": "--out", "seed": "the recipe's top-level seed (or --seed)",
             "reward_weights": "each reward's weight in rewards"}
#: Keys of earlier rlpc recipes, with their trl names: an old recipe fails with the rename to make.
RENAMED = {
    "grpo.steps": "grpo.max_steps", "grpo.lr_scheduler": "grpo.lr_scheduler_type",
    "grpo.warmup_ratio": "grpo.warmup_steps (a value below 1 is a share of the steps)",
    "grpo.per_device_batch_size": "grpo.per_device_train_batch_size",
    "grpo.trl_args": "grpo itself (every GRPOConfig field goes straight in the grpo section)",
    "sft.epochs": "sft.num_train_epochs", "sft.batch_size": "sft.per_device_train_batch_size",
    "sft.pairs": "warmup.pairs", "sft.bootstrap_rows": "warmup.bootstrap_rows",
    "sft.min_compression": "warmup.min_compression", "extractive.clip_epsilon": "grpo.epsilon",
    "extractive.update_epochs": "grpo.num_iterations", "extractive.max_grad_norm": "grpo.max_grad_norm",
    "extractive.scale_rewards": "grpo.scale_rewards (group, or none for Dr. GRPO's centred advantages)",
}
_SIMPLE = (bool, int, float, str)


def trl_class(stage: str) -> Any:
    import trl

    return getattr(trl, TRL_CLASSES[stage])


def _check_trl_type(path: str, value: Any, kind: Any) -> None:
    """The check trl's dataclasses leave out: a value of the declared simple type (YAML ints pass for floats)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (Union, types.UnionType):
        if value is None and type(None) in args:
            return
        simple = [a for a in args if a in _SIMPLE]
        if len(simple) != len([a for a in args if a is not type(None)]):
            return  # a union with an enum, list or dict: trl converts and checks it
        kind = simple[0] if len(simple) == 1 else None
    if kind is bool and not isinstance(value, bool):
        _fail(path, value, "must be true or false", "write true or false")
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        _fail(path, value, "must be an integer", "write a whole number, e.g. 4")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
        _fail(path, value, "must be a finite number", "write a number, e.g. 0.5 or 5e-6")
    if kind is str and not isinstance(value, str):
        _fail(path, value, "must be a string", "write a name")


class TrlSettings(Mapping):
    """One of trl's config classes as a recipe section: the values set (rlpc's defaults, then the recipe's), by
    trl's own field names; an attribute not set reads trl's default."""

    def __init__(self, stage: str, values: Mapping[str, Any]):
        self._stage, self._values = stage, dict(values)

    @classmethod
    def from_dict(cls, stage: str, data: Any) -> "TrlSettings":
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise RecipeError(f"{stage}={data!r} must be a mapping of trl {TRL_CLASSES[stage]} fields; write key: "
                              "value pairs under it")
        config = trl_class(stage)
        fields = {f.name: f for f in dataclasses.fields(config) if f.init}
        hints = typing.get_type_hints(config)
        for key, value in data.items():
            path = f"{stage}.{key}"
            if path in RENAMED:
                raise RecipeError(f"recipe key {path!r} is now {RENAMED[path]}; rename it in the recipe")
            if key in TRL_OWNED:
                _fail(path, value, "is set by the run, not the recipe", f"use {TRL_OWNED[key]}")
            if key not in fields:
                close = difflib.get_close_matches(str(key), list(fields), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise RecipeError(f"unknown recipe key {path!r}{hint}: the {stage} section takes trl's "
                                  f"{config.__name__} field names (python -m training.{stage} --help lists them)")
            _check_trl_type(path, value, hints[key])
        settings = cls(stage, {**TRL_DEFAULTS[stage], **copy.deepcopy(dict(data))})
        settings._check()
        return settings

    def _check(self) -> None:
        """trl's own checks (run device-free: the device is chosen when training starts), then rlpc's rules."""
        s = self._stage
        try:
            self.build(output_dir=None, device_free=True)
        except (ValueError, TypeError) as err:
            raise RecipeError(f"{s}: {err} (trl's {TRL_CLASSES[s]} check); fix the {s} section") from None
        if self.bf16 and self.use_cpu:
            _fail(f"{s}.bf16", True, "with use_cpu is ~3x slower than float32 on these CPUs", "set bf16: false")
        if s == "grpo":
            _between("grpo.beta", self.beta, 0.0, 10.0, "use e.g. 0.001 (0 disables the KL term)")
            _between("grpo.epsilon", self.epsilon, 0.0, 1.0, "use e.g. 0.2", lo_open=True)
            _choice("grpo.scale_rewards", str(self.scale_rewards), ("group", "batch", "none"))
            if self.use_vllm and self.use_cpu:
                _fail("grpo.use_vllm", True, "needs a GPU, but use_cpu is true", "set use_vllm: false on CPUs")

    def build(self, output_dir: Optional[Union[str, Path]], device_free: bool = False, **owned: Any) -> Any:
        """trl's config object; ``device_free`` checks the values without asking for the device they name."""
        values = {**self._values, **owned}
        if device_free:
            values["use_cpu"] = True  # bf16 on a machine without a GPU is refused only for a run that would use one
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return trl_class(self._stage)(output_dir=None if output_dir is None else str(output_dir), **values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._values:
            return self._values[name]
        for f in dataclasses.fields(trl_class(self._stage)):
            if f.name == name:
                return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        raise AttributeError(f"trl's {TRL_CLASSES[self._stage]} has no field {name!r}")

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, TrlSettings) and (self._stage, self._values) == (other._stage, other._values)

    def __hash__(self) -> int:
        return hash((self._stage, json.dumps(self._values, sort_keys=True, default=str)))

    def __repr__(self) -> str:
        return f"TrlSettings({TRL_CLASSES[self._stage]}, {self._values!r})"


@dataclass(frozen=True)
class ExtractiveSection(_Section):
    """Settings of the extractive policy's own trainer (:mod:`training.extractive`) that trl has no field for; the
    ``grpo`` section gives the rest in trl's names: ``max_steps``, ``learning_rate``, ``lr_scheduler_type``,
    ``warmup_steps``, G (``num_generations``), masks per step (``per_device_train_batch_size``), ``beta``, the clip
    range ``epsilon``, passes over each step's samples ``num_iterations``, ``scale_rewards`` (``group``, or
    ``none`` for Dr. GRPO), ``temperature``, ``max_grad_norm`` and the checkpoints. The ``sft`` section gives the
    warm-up's ``num_train_epochs``, ``learning_rate``, ``per_device_train_batch_size``, ``max_steps``,
    ``max_grad_norm`` and ``logging_steps``."""

    _path = "extractive"
    #: Target rates; each step draws one for all its prompts, so the learned ranking serves every budget.
    rates: tuple[float, ...] = (0.33, 0.5)
    #: Hidden width of the head's MLP over [encoder state; graph features].
    head_dim: int = 128
    #: Starting share of the sentence mean in the graph prior of a fresh head (learned from there; 0 = the graph
    #: policy's own ranking).
    prior_sentence_share: float = 0.0
    #: Encoder window during training (word pieces); inference uses ``ExtractiveConfig.max_length`` up to this.
    max_length: int = 512
    #: Warm-up (``python -m training.sft``) target masks at each of ``rates``: ``graph`` (the graph policy's) or
    #: ``reward-best`` (the best of the graph's mask and, for qa rows, the graph's mask with an answer-bearing
    #: sentence forced in, under the answer_span and compression rewards: the best samples of the rewards) or
    #: ``answer-sentences`` (the words of the sentences that hold a gold answer: sentence relevance, as Provence is
    #: trained; rows without one fall back to ``reward-best``).
    warmup_labels: str = "reward-best"
    #: What one action keeps or drops. ``words``: each word (a Bernoulli keep-mask over the words). ``blocks``: each
    #: sentence or demonstration of the shared coarse-to-fine selection (:func:`rlpc_core.selection.realize` makes
    #: the choice real: forms, meaning units, the fine stage and the budget), so structure and negation scope are
    #: never something RL has to rediscover and training sees exactly what inference produces. A block's logit is
    #: the mean of its content words' logits. Math problems (no sentence may go) stay word-level either way.
    action: str = "words"

    def __post_init__(self) -> None:
        if not self.rates:
            _fail("extractive.rates", [], "must list at least one rate", "use e.g. [0.33, 0.5]")
        for r in self.rates:
            _between("extractive.rates[]", r, 0.0, 1.0, "use rates like 0.33 or 0.5", lo_open=True, hi_open=True)
        _at_least("extractive.head_dim", self.head_dim, 8, "use e.g. 128")
        _at_least("extractive.max_length", self.max_length, 64, "use e.g. 512")
        if self.max_length > 512:
            _fail("extractive.max_length", self.max_length, "exceeds MiniLM's 512 positions", "use 512 or less")
        _between("extractive.prior_sentence_share", self.prior_sentence_share, 0.0, 1.0, "use e.g. 0.7", hi_open=True)
        _choice("extractive.warmup_labels", self.warmup_labels, ("reward-best", "graph", "answer-sentences"))
        _choice("extractive.action", self.action, ("words", "blocks"))


@dataclass(frozen=True)
class EvaluatorSection(_Section):
    """The frozen evaluator LLM (:class:`rlpc_core.evaluator.Evaluator`) behind the answer_* rewards."""

    _path = "evaluator"
    #: Embedded alias, Hugging Face id or folder (the reference: ``TinyLlama/TinyLlama-1.1B-Chat-v1.0``).
    model: str = "smollm2-135m-instruct"
    #: ``auto`` puts it on each training process's own device (cuda:N, or the CPU).
    device: str = "auto"
    #: Prompts per forward pass (4 suits 2 CPU cores; raise it on a GPU).
    batch_size: int = 4
    #: Generation budget of answer_agreement (the reference: 256, a GSM8K chain of thought).
    max_new_tokens: int = 256
    #: Weights' dtype: float32 on CPUs, bfloat16 on GPUs.
    dtype: str = "float32"
    #: ``true`` (the shared sqlite cache in ``$RLPC_CACHE``), ``false``, or a file path. The original prompts'
    #: outputs are computed once, before training, and read from here at every step.
    cache: Any = True
    #: Settings of the reader's backend (``rlpc_core.backends``): for ``llamacpp:`` readers ``n_ctx``, ``threads``,
    #: ``prefix_cache``; for ``openai:`` servers ``concurrency``, ``timeout``, ``retries``, ``api_key_env``.
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _at_least("evaluator.batch_size", self.batch_size, 1, "use e.g. 4")
        _at_least("evaluator.max_new_tokens", self.max_new_tokens, 1, "use e.g. 256")
        _choice("evaluator.dtype", self.dtype, ("float32", "bfloat16", "float16"))
        if not isinstance(self.cache, (bool, str)):
            _fail("evaluator.cache", self.cache, "must be true, false or a file path", "write true")

    def spec(self, device: str) -> dict[str, Any]:
        return {"model": self.model, "device": device if self.device == "auto" else self.device,
                "batch_size": self.batch_size, "max_new_tokens": self.max_new_tokens, "dtype": self.dtype,
                "cache": self.cache, **dict(self.options)}


@dataclass(frozen=True)
class FeedbackSection(_Section):
    """The MiniLM feedback model (:class:`rlpc_core.feedback.FeedbackModel`) behind the fidelity reward."""

    _path = "feedback"
    #: ``all-minilm-l6-v2`` (embedded bi-encoder) or a cross-encoder id such as the reference's
    #: ``cross-encoder/ms-marco-MiniLM-L-6-v2`` (which falls back to the bi-encoder, with a warning, where it
    #: cannot be loaded).
    model: str = "all-minilm-l6-v2"
    #: ``cross-encoder`` | ``bi-encoder`` | null (decided from the model).
    kind: Optional[str] = None
    #: ``auto``: each training process's own device.
    device: str = "auto"
    #: Text pairs per forward pass.
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.kind is not None:
            _choice("feedback.kind", self.kind, ("cross-encoder", "bi-encoder"))
        _at_least("feedback.batch_size", self.batch_size, 1, "use e.g. 32")

    def spec(self, device: str) -> dict[str, Any]:
        out = {"model": self.model, "device": device if self.device == "auto" else self.device,
               "batch_size": self.batch_size}
        if self.kind is not None:
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class Recipe(_Section):
    """Everything a training run needs; see training/recipes/*.yaml for documented examples."""

    _path = ""
    #: Short name; the run's model card and logs carry it.
    name: str = "recipe"
    #: One line on what the recipe is for.
    description: str = ""
    #: Seeds the data shuffle (unless data.seed is set), LoRA's initialisation, sampling and the optimizer.
    seed: int = 0
    #: Share of the original tokens a compression should keep: the policy's word budget in its prompt, the
    #: compression reward's peak, and the bootstrap compressor's rate. 0.5 is the middle of the 30-50% savings
    #: the reference claimed.
    target_rate: float = 0.5
    policy: PolicySection = field(default_factory=PolicySection)
    data: DataSection = field(default_factory=DataSection)
    #: trl's reward functions and weights, built by ``rlpc_core.rewards.build_rewards``.
    rewards: tuple[RewardItem, ...] = (RewardItem("compression"), RewardItem("protected_coverage"),
                                       RewardItem("format"))
    constraint: ConstraintSection = field(default_factory=ConstraintSection)
    warmup: WarmupSection = field(default_factory=WarmupSection)
    #: trl's ``SFTConfig`` fields for the supervised warm-up (rlpc's defaults in ``TRL_DEFAULTS``).
    sft: TrlSettings = field(default_factory=lambda: TrlSettings.from_dict("sft", {}))
    #: trl's ``GRPOConfig`` fields (rlpc's defaults in ``TRL_DEFAULTS``: the reference design's values).
    grpo: TrlSettings = field(default_factory=lambda: TrlSettings.from_dict("grpo", {}))
    extractive: ExtractiveSection = field(default_factory=ExtractiveSection)
    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)
    feedback: FeedbackSection = field(default_factory=FeedbackSection)
    #: The settings the trained compressor runs with, in ``rlpc_core.CompressorConfig``'s own names (``tokenizer``,
    #: ``keep_code``, ``graph``, ``extractive``, ``selection``): training scores, budgets and selects with them and
    #: the checkpoint saves them, so the compressor trained is the one used. ``policy``, ``rate`` and the
    #: generative settings come from ``policy.kind``, ``target_rate`` and ``policy``. Empty: rlpc's defaults.
    compressor: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from rlpc_core import check_rate

        try:
            check_rate(self.target_rate)
        except ValueError:
            _fail("target_rate", self.target_rate, "must be in (0, 1)", "use e.g. 0.5")
        if self.target_rate >= 1.0:
            _fail("target_rate", self.target_rate, "must be below 1 (1 is no compression)", "use e.g. 0.5")
        if not self.rewards:
            _fail("rewards", [], "must list at least one reward", "add e.g. {name: compression}")
        for owned, where in (("policy", "policy.kind"), ("rate", "target_rate"), ("generative", "policy")):
            if owned in self.compressor:
                _fail(f"compressor.{owned}", self.compressor[owned], f"is the recipe's {where}",
                      f"set {where} instead and remove compressor.{owned}")
        try:
            self.compressor_config()
        except ValueError as err:
            _fail("compressor", self.compressor, f"is not a valid CompressorConfig ({err})",
                  "use CompressorConfig's field names, e.g. {selection: {max_word_drop: 0.3}}")
        names = [r.name for r in self.rewards]
        if self.constraint.enabled and self.constraint.reward not in names:
            _fail("constraint.reward", self.constraint.reward, f"is not among the recipe's rewards ({', '.join(names)})",
                  "name one of them, add it to rewards, or set constraint.enabled: false")

    def compressor_config(self):
        """The :class:`rlpc_core.CompressorConfig` the trained compressor runs with (and training uses)."""
        from rlpc_core import CompressorConfig

        return CompressorConfig.from_dict({**self.compressor, "policy": self.policy.kind, "rate": self.target_rate,
                                           "generative": dataclasses.asdict(self.policy.generative_config())})

    @property
    def data_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed

    def reward_specs(self, device: str = "cpu") -> list[dict[str, Any]]:
        """The ``rewards`` list for ``build_rewards``, with the recipe-level defaults filled in."""
        specs = []
        for item in self.rewards:
            kwargs = copy.deepcopy(item.kwargs)
            if item.name == "compression":
                kwargs.setdefault("target_rate", self.target_rate)
            if item.name in EVALUATOR_REWARDS:
                kwargs.setdefault("evaluator", self.evaluator.spec(device))
            if item.name in FEEDBACK_REWARDS:
                kwargs.setdefault("model", self.feedback.spec(device))
            specs.append({"name": item.name, "weight": item.weight, "kwargs": kwargs})
        return specs

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=110)


# ---------------------------------------------------------------- loading and overrides

def recipe_path(name_or_path: Union[str, Path]) -> Path:
    """A recipe file: a path, or the name of one in training/recipes (with or without ``.yaml``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    for candidate in (RECIPES_DIR / f"{name_or_path}.yaml", RECIPES_DIR / str(name_or_path)):
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise RecipeError(f"recipe={str(name_or_path)!r} is neither a file nor a recipe in {RECIPES_DIR}; pass a YAML path "
                     f"or one of {', '.join(known)}")


def _parse_value(text: str) -> Any:
    try:
        return parse_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` to a recipe mapping in place (the recipe then checks the result)."""
    key, sep, raw = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(f"--set {assignment!r} is not key=value; write e.g. --set grpo.learning_rate=1e-5")
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "the recipe"
        if isinstance(node, list):
            index = _list_index(node, part, ".".join(parts[: depth + 1]))
            if last:
                node[index] = _parse_value(raw)
            else:
                if isinstance(node[index], str):  # a reward written as a bare name
                    node[index] = {"name": node[index]}
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = _parse_value(raw)
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise RecipeError(f"--set {assignment!r}: {where} is {node!r}, not a section, so it has no key {part!r}")


def _list_index(items: list, part: str, path: str) -> int:
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise RecipeError(f"--set {path}: index {index} is out of range (the list has {len(items)} items)")
        return index
    names = [(it.get("name") if isinstance(it, dict) else it) for it in items]
    if part in names:
        return names.index(part)
    raise RecipeError(f"--set {path}: no item named {part!r}; items are {names} (or use an index, e.g. .0.)")


def load_recipe(name_or_path: Union[str, Path, None] = None, overrides: Sequence[str] = (),
                data: Optional[Mapping[str, Any]] = None) -> Recipe:
    """A checked :class:`Recipe` from a YAML file (or a mapping), with ``key=value`` overrides applied in order."""
    if data is None:
        if name_or_path is None:
            raise RecipeError("no recipe given; pass --recipe NAME_OR_PATH (e.g. smollm2-cpu-gsm8k)")
        path = recipe_path(name_or_path)
        try:
            data = parse_yaml(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise RecipeError(f"recipe {str(path)!r} is not valid YAML ({err}); fix the file") from err
    data = copy.deepcopy(dict(data))
    for assignment in overrides:
        apply_override(data, assignment)
    return Recipe.from_dict(data)


# ---------------------------------------------------------------- the command line of sft and grpo

def training_parser(stage: str, prog: str, description: str) -> argparse.ArgumentParser:
    """``python -m training.<stage>``'s parser: rlpc's options, then every field of trl's config class with its help
    text (transformers' own ``HfArgumentParser``). A trl flag given (``--learning_rate 1e-5``, ``--max-steps 3``)
    overrides the recipe's value; one not given leaves it."""
    from transformers import HfArgumentParser

    description = (f"{description} rlpc's own options (--recipe, --set, --out, ...) are listed last; the others are "
                   f"the fields of trl's {TRL_CLASSES[stage]}, the recipe's {stage} section, by their own names.")
    parser = HfArgumentParser(trl_class(stage), prog=prog, description=description)
    fields = _trl_fields(stage)
    for action in parser._actions:  # no trl default stands in for the recipe's value: only flags given are set
        if action.dest in fields:
            action.default, action.required = argparse.SUPPRESS, False
    add_recipe_arguments(parser.add_argument_group("rlpc: the recipe and the run"))
    return parser


def _trl_fields(stage: str) -> set[str]:
    return {f.name for f in dataclasses.fields(trl_class(stage)) if f.init}


def add_recipe_arguments(parser: Any) -> None:
    parser.add_argument("--recipe", help="recipe name in training/recipes (e.g. smollm2-cpu-gsm8k) or a YAML path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value (dotted key, YAML value), e.g. --set grpo.learning_rate=1e-5; "
                             "repeatable")
    parser.add_argument("--policy", choices=("generative", "extractive"), default=None,
                        help="override policy.kind")
    parser.add_argument("--data", default=None, metavar="SPEC",
                        help="training rows, overriding data.dataset: your own PATH.jsonl, one JSON object per line as "
                             "{\"context\", \"question\", \"answers\": [...]} (QA), {\"prompt\", \"reference\"} (any "
                             "prompt and the answer it should give) or GSM8K's {\"question\", \"answer\": \"...#### 18\"}; "
                             "hf:ORG/NAME[:CONFIG] from the Hugging Face hub; or a named set (gsm8k, squad, nq, "
                             "squad-multi, nq-20docs; several joined by +)")
    parser.add_argument("--data-dir", default=None, metavar="DIR",
                        help="folder holding the named sets (default ../shared/data beside the repository)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, adapter, logs, card)")


def trl_overrides(args: argparse.Namespace, stage: str) -> list[str]:
    """The trl flags given on the command line as recipe overrides (``--seed`` is the recipe's seed)."""
    given = {k: v for k, v in vars(args).items() if k in _trl_fields(stage)}
    if "output_dir" in given:
        raise RecipeError(f"--output_dir={given['output_dir']!r} is the run folder; pass it as --out")
    # JSON is YAML: each value arrives with the type argparse gave it
    return [f"seed={v}" if k == "seed" else f"{stage}.{k}={json.dumps(v)}" for k, v in given.items()]


def recipe_from_args(args: argparse.Namespace, stage: str, data: Optional[Mapping[str, Any]] = None) -> Recipe:
    """The recipe named by ``--recipe`` (or ``data``) with ``--set``, ``--policy``, ``--data`` and the trl flags
    given (``--seed`` is the recipe's seed)."""
    overrides = list(args.overrides) + trl_overrides(args, stage)
    if args.policy is not None:
        overrides.append(f"policy.kind={args.policy}")
    # JSON strings are YAML scalars: a path or an hf: id with colons arrives as the exact string given
    if getattr(args, "data", None) is not None:
        overrides.append(f"data.dataset={json.dumps(str(args.data))}")
    if getattr(args, "data_dir", None) is not None:
        overrides.append(f"data.data_dir={json.dumps(str(args.data_dir))}")
    return load_recipe(args.recipe, overrides, data=data)


__all__ = ["ConstraintSection", "DataSection", "EvaluatorSection", "FeedbackSection", "LoraSection", "PolicySection",
           "RECIPES_DIR", "RENAMED", "Recipe", "RecipeError", "RewardItem", "TRL_CLASSES", "TRL_DEFAULTS",
           "TrlSettings", "WarmupSection", "add_recipe_arguments", "apply_override", "load_recipe", "parse_yaml",
           "recipe_from_args", "recipe_path", "trl_class", "trl_overrides", "training_parser"]
