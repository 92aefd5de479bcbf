"""rlpc: prompt compression with compressors trained by reinforcement learning.

The public API; adapters and training import only these names. Importing this package is cheap: no model,
torch or network is touched until a compressor is first used.
"""

from .compressor import Compressor, select_words
from .config import CompressorConfig, ExtractiveConfig, GenerativeConfig, GraphConfig, check_budget, check_rate, check_target_tokens
from .graph import GraphScores, score_words
from .policies import policy_names, register_policy
from .policies.generative import clean_rewrite, policy_messages
from .result import CompressionResult
from .rewards import build_rewards, completion_text, register_reward, reward_names
from .spans import KEEP_CLOSE, KEEP_OPEN

__version__ = "0.2.0"

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
