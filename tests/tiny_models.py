"""Tiny randomly initialised models of the reference architectures (Phi-3 policy, Llama/TinyLlama evaluator).

They cover the code paths that need Phi-3-mini or TinyLlama weights (which cannot be had here) in a second:
same classes, same configs' shape, a few thousand parameters, and the embedded SmolLM2 tokenizer (a real chat
template) so prompts are built exactly as for the real models.
"""

from __future__ import annotations

from pathlib import Path


def make_tiny(folder: Path, arch: str) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Phi3Config

    from rlpc_core.models import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    common = dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                  num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = Phi3Config(**common) if arch == "phi3" else LlamaConfig(**common)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder
