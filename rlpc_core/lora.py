"""A minimal LoRA for encoder policies: train low-rank updates, ship them small, merge them for inference.

The extractive policy ships as "base model + adapter + head" inside the package (a few MB), so its loader must
not need peft (a training-only dependency). This module is the whole mechanism: :func:`add_lora` wraps chosen
``nn.Linear`` layers in :class:`LoRALinear` for training, :func:`lora_state_dict` extracts the update, and
:func:`merge_lora` folds a saved update into a plain base model, ``W += (alpha / r) * B @ A``, so inference
costs exactly a bare forward of the base.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import torch
from torch import nn


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * B(A(dropout(x)))`` with ``base`` frozen; ``B`` starts at zero (no change)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r={r!r} must be >= 1; use e.g. 8")
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha, self.scale = int(r), float(alpha), float(alpha) / int(r)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear initialises its own weight
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.t() @ self.lora_B.t()) * self.scale


def _targets(model: nn.Module, suffixes: Iterable[str]) -> list[tuple[nn.Module, str, nn.Linear, str]]:
    wanted = tuple(suffixes)
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and any(full == s or full.endswith("." + s) for s in wanted):
                found.append((module, child_name, child, full))
    return found


def add_lora(model: nn.Module, targets: Iterable[str], r: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Wrap every ``nn.Linear`` whose dotted name ends with one of ``targets``; returns the wrapped names.

    Raises ``ValueError`` naming the linear layers the model has when a target matches nothing.
    """
    targets = list(targets)
    found = _targets(model, targets)
    matched = {t for t in targets if any(full == t or full.endswith("." + t) for *_, full in found)}
    missing = [t for t in targets if t not in matched]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"LoRA targets {missing} match no linear layer of {type(model).__name__}; its linear "
                         f"layers end in {linear}: name some of those")
    for parent, child_name, child, _ in found:
        setattr(parent, child_name, LoRALinear(child, r, alpha, dropout))
    return [full for *_, full in found]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter alone: ``{"<layer>.lora_A": ..., "<layer>.lora_B": ...}`` for every wrapped layer."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            out[f"{name}.lora_A"] = module.lora_A.detach().clone()
            out[f"{name}.lora_B"] = module.lora_B.detach().clone()
    return out


def load_lora_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a saved adapter into a model already wrapped by :func:`add_lora` (to resume or continue training)."""
    modules = dict(model.named_modules())
    for key, value in state.items():
        layer, _, part = key.rpartition(".")
        module = modules.get(layer)
        if not isinstance(module, LoRALinear) or part not in ("lora_A", "lora_B"):
            raise ValueError(f"adapter entry {key!r} has no LoRA layer in this model; was it saved from another "
                             "base model or with other targets?")
        getattr(module, part).data.copy_(value)


def merge_lora(model: nn.Module, state: Mapping[str, torch.Tensor], scale: float) -> int:
    """Fold a saved adapter into a plain model's linear layers (``W += scale * B @ A``); returns layers merged."""
    modules = dict(model.named_modules())
    merged = 0
    for key in state:
        if not key.endswith(".lora_A"):
            continue
        layer = key[: -len(".lora_A")]
        module = modules.get(layer)
        if not isinstance(module, nn.Linear):
            raise ValueError(f"adapter layer {layer!r} is not a linear layer of {type(model).__name__}; the adapter "
                             "was saved for another base model")
        a, b = state[key], state[layer + ".lora_B"]
        with torch.no_grad():
            module.weight += (scale * (b.to(torch.float32) @ a.to(torch.float32))).to(module.weight.dtype)
        merged += 1
    return merged


def unwrap_lora(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by its base layer with the update merged in (in place); returns model."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                with torch.no_grad():
                    child.base.weight += child.scale * (child.lora_B @ child.lora_A)
                setattr(module, child_name, child.base)
    return model


def trainable(params: Iterable[Any]) -> int:
    return sum(p.numel() for p in params if p.requires_grad)


__all__ = ["LoRALinear", "add_lora", "load_lora_state", "lora_state_dict", "merge_lora", "trainable", "unwrap_lora"]
