"""Fidelity as a constraint: a Lagrange multiplier that moves the weight of a fidelity reward during GRPO.

A fixed weight says how much fidelity is worth against compression, once, before training; a constraint says
how much fidelity must be kept (``target``) and lets the weight find its level. The Lagrangian of "maximise
compression subject to E[fidelity] >= target" is ``compression + lambda * (fidelity - target)``; dual ascent
moves lambda against the constraint's violation after each batch::

    lambda <- clip(lambda + eta * (target - observed), 0, lambda_max)

where ``observed`` is the mean fidelity of the recent reward batches (``window`` of them; each batch is every
group trl generated for one optimizer step). Lambda rises while fidelity is below target, falls while it is
above, and is never negative (a satisfied constraint exerts no pull). It enters trl's weighted reward sum as
the fidelity reward's weight ``base_weight * (1 + lambda)``: with lambda = 0 the recipe's weight is unchanged,
so ``constraint.enabled: false`` and a satisfied constraint train alike. (The alternative form ``compression +
lambda * fidelity`` would drop fidelity entirely while the constraint holds; the ``1 +`` keeps a floor.)

Which reward is "fidelity" is the recipe's choice (``constraint.reward``): ``answer_agreement`` (does the
evaluator answer the compressed prompt as it answers the original, the quantity the 0.97 target is about) on
GPUs, or ``answer_likelihood`` (the evaluator's per-token probability of the gold solution given the compressed
vs the original prompt) as its dense proxy where the evaluator is too small to answer GSM8K (CPU recipes).

:class:`FidelityConstraint` wraps the reward function itself, so no trainer change is needed: trl calls it with
each batch; it returns the reward's values unchanged (trl logs the raw fidelity mean as usual), sets its own
weight in the trainer for this batch (lambda from the batches before it), updates lambda from this batch, and
logs ``constraint/lambda``, ``constraint/weight`` and ``constraint/observed`` through trl's ``log_metric``.
With several processes the batch mean is all-reduced first, so every process holds the same lambda.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Callable, Optional, Sequence


class FidelityConstraint:
    """A reward function in trl's contract whose weight follows a Lagrange multiplier (see the module docstring).

    >>> c = FidelityConstraint(lambda prompts, completions, **kw: [0.9] * len(completions), target=0.97, eta=1.0,
    ...                        window=1)
    >>> c(["p"] * 2, ["a", "b"]), round(c.lam, 2), round(c.weight, 2)
    ([0.9, 0.9], 0.07, 1.07)
    """

    def __init__(self, reward_fn: Callable[..., list[Optional[float]]], *, target: float = 0.97, eta: float = 1.0,
                 lambda_init: float = 0.0, lambda_max: float = 10.0, window: int = 4, base_weight: float = 1.0):
        if not callable(reward_fn):
            raise ValueError(f"reward_fn={reward_fn!r} must be a reward function fn(prompts, completions, **kwargs)")
        for name, value in (("target", target), ("eta", eta), ("lambda_max", lambda_max), ("base_weight", base_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name}={value!r} must be a finite number")
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target={target!r} must be in (0, 1]; use e.g. 0.97")
        if eta <= 0 or lambda_max <= 0:
            raise ValueError(f"eta={eta!r} and lambda_max={lambda_max!r} must be > 0; use e.g. eta=1.0, lambda_max=10")
        if not 0.0 <= lambda_init <= lambda_max:
            raise ValueError(f"lambda_init={lambda_init!r} must be in [0, lambda_max={lambda_max}]; use 0.0")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window={window!r} must be an integer >= 1; use e.g. 4")
        self.reward_fn = reward_fn
        self.__name__ = getattr(reward_fn, "__name__", type(reward_fn).__name__)  # trl logs the reward under it
        self.target, self.eta, self.lambda_max, self.base_weight = float(target), float(eta), float(lambda_max), float(base_weight)
        self.lam = float(lambda_init)
        self.recent: deque[float] = deque(maxlen=window)
        self.updates = 0
        self._set_weight: Optional[Callable[[float], None]] = None

    @classmethod
    def from_recipe(cls, reward_fn: Callable[..., Any], section: Any, base_weight: float) -> "FidelityConstraint":
        """Build from a recipe's ``constraint`` section (:class:`training.recipe.ConstraintSection`)."""
        return cls(reward_fn, target=section.target, eta=section.eta, lambda_init=section.lambda_init,
                   lambda_max=section.lambda_max, window=section.window, base_weight=base_weight)

    def __getattr__(self, name: str) -> Any:
        # The wrapped reward's settings (evaluator, task, ...) stay reachable, e.g. for precomputing its cache.
        if name == "reward_fn":
            raise AttributeError(name)
        return getattr(self.reward_fn, name)

    def __repr__(self) -> str:
        return (f"FidelityConstraint({self.__name__}, target={self.target}, lambda={self.lam:.4f}, "
                f"weight={self.weight:.4f})")

    @property
    def weight(self) -> float:
        """The constrained reward's weight in trl's sum now: ``base_weight * (1 + lambda)``."""
        return self.base_weight * (1.0 + self.lam)

    def update(self, observed: float) -> float:
        """One dual-ascent step with a batch's mean fidelity; returns the new lambda. NaN (no value) is skipped."""
        if observed is None or not math.isfinite(observed):
            return self.lam
        self.recent.append(float(observed))
        mean = sum(self.recent) / len(self.recent)
        self.lam = min(self.lambda_max, max(0.0, self.lam + self.eta * (self.target - mean)))
        self.updates += 1
        return self.lam

    @property
    def observed(self) -> float:
        """Mean fidelity over the recent batches (NaN before the first)."""
        return sum(self.recent) / len(self.recent) if self.recent else float("nan")

    def bind(self, set_weight: Callable[[float], None]) -> None:
        """Give the constraint a way to set its weight in the trainer (``trainer.reward_weights[i] = w``)."""
        self._set_weight = set_weight
        set_weight(self.weight)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[Optional[float]]:
        values = self.reward_fn(prompts, completions, **kwargs)
        lam_used, weight_used = self.lam, self.weight
        if self._set_weight is not None:
            self._set_weight(weight_used)  # trl sums the rewards after every reward function has returned
        batch_mean = _global_mean(values)
        self.update(batch_mean)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric("constraint/lambda", lam_used)
            log_metric("constraint/weight", weight_used)
            if math.isfinite(self.observed):
                log_metric("constraint/observed", self.observed)
        return values

    # -- checkpoints: a resumed run continues with the lambda it had
    def state_dict(self) -> dict[str, Any]:
        return {"lambda": self.lam, "recent": list(self.recent), "updates": self.updates, "target": self.target,
                "eta": self.eta, "base_weight": self.base_weight}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lam = float(state["lambda"])
        self.recent.clear()
        self.recent.extend(float(v) for v in state.get("recent", []))
        self.updates = int(state.get("updates", 0))
        if self._set_weight is not None:
            self._set_weight(self.weight)


def _global_mean(values: Sequence[Optional[float]]) -> float:
    """Mean of the finite values, over every process when torch.distributed is running (else this one's)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    total, count = sum(finite), len(finite)
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is always there in training
        dist = None
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        import torch

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return total / count if count else float("nan")


__all__ = ["FidelityConstraint"]
