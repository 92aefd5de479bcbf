"""rlpc: prompt compression with compressors trained by reinforcement learning.

The public API; adapters and training import only these names. Importing this package is cheap: no model,
torch or network is touched until a compressor is first used.
"""

from .compressor import Compressor, select_words
from .config import CompressorConfig, ExtractiveConfig, GenerativeConfig, GraphConfig, check_budget, check_rate, check_target_tokens
from .graph import GraphScores, score_words
from .policies import policy_names, register_policy
from .result import CompressionResult
from .spans import KEEP_CLOSE, KEEP_OPEN

__version__ = "0.2.0"

# Training-side names load on first use: the rewards pull in the evaluator and sqlite, which an application that
# only compresses never needs (PEP 562 module __getattr__).
_LAZY = {
    "build_rewards": "rewards", "completion_text": "rewards", "register_reward": "rewards", "reward_names": "rewards",
    "clean_rewrite": "policies.generative", "policy_messages": "policies.generative",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'rlpc_core' has no attribute {name!r}")

__all__ = [
    "Compressor",
    "CompressionResult",
    "CompressorConfig",
    "ExtractiveConfig",
    "GenerativeConfig",
    "GraphConfig",
    "GraphScores",
    "KEEP_CLOSE",
    "KEEP_OPEN",
    "check_budget",
    "check_rate",
    "check_target_tokens",
    "build_rewards",
    "clean_rewrite",
    "completion_text",
    "policy_messages",
    "register_reward",
    "reward_names",
    "policy_names",
    "register_policy",
    "score_words",
    "select_words",
    "__version__",
]
