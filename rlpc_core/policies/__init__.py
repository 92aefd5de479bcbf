"""Compressor policies, registered by name so that ``Compressor(policy=NAME)`` and checkpoints can find them.

Two shapes share the :class:`~rlpc_core.compressor.Compressor` entry point:

* an *extractive* policy scores words (:meth:`score`); the compressor then keeps the best words within the
  budget, always keeping protected ones, so its output is a subsequence of the input;
* a *rewriting* policy returns new text (:meth:`rewrite`); the compressor checks it and falls back to an
  extractive policy when it breaks a rule.
"""

from __future__ import annotations

from typing import Callable

from .base import ExtractivePolicy, RewritingPolicy, WordScores

PolicyFactory = Callable[..., "ExtractivePolicy | RewritingPolicy"]
_REGISTRY: dict[str, PolicyFactory] = {}


def register_policy(name: str, factory: PolicyFactory) -> None:
    """Register a policy factory ``factory(config, **kwargs)`` under ``name``."""
    _REGISTRY[name] = factory


def policy_names() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def check_policy_name(name: str) -> None:
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown policy {name!r}: valid policies are {', '.join(sorted(_REGISTRY))}; "
            "pass one of them, or load a trained checkpoint with Compressor.from_pretrained(folder)"
        )


def make_policy(name: str, config, **kwargs):
    check_policy_name(name)
    return _REGISTRY[name](config, **kwargs)


def _load_builtin() -> None:
    # Imported on first use: policies may pull in heavy libraries that plain `import rlpc_core` must not.
    if "graph" not in _REGISTRY:
        from .extractive import ExtractivePolicyModel
        from .generative import GenerativePolicy
        from .graph import GraphPolicy

        register_policy("graph", GraphPolicy)
        register_policy("generative", GenerativePolicy)
        register_policy("extractive", ExtractivePolicyModel)


__all__ = ["ExtractivePolicy", "RewritingPolicy", "WordScores", "check_policy_name", "make_policy", "policy_names", "register_policy"]
