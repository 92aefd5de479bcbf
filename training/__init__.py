"""Training for rlpc compressors: supervised warm-up and GRPO (python -m training.sft | training.grpo | training.evaluate)."""
