"""Greedy chat generation with an rlpc model spec (default: the embedded SmolLM2-135M-Instruct).

Shared by the examples' small LangChain and LlamaIndex wrappers; swap those wrappers for your real LLM.
"""

from __future__ import annotations


def chat_generate(messages: list[dict], *, model: str = "smollm2-135m-instruct", max_new_tokens: int = 32) -> str:
    """``messages`` are ``{"role": "system"|"user"|"assistant", "content": str}``; returns the reply text."""
    import torch

    from rlpc_core.models import load_causal_lm

    lm, tok = load_causal_lm(model)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = lm.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
