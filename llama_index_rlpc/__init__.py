"""LlamaIndex adapter for rlpc: a node postprocessor that compresses each retrieved node before the LLM sees it.

    from llama_index_rlpc import RLPCNodePostprocessor
    engine = index.as_query_engine(node_postprocessors=[RLPCNodePostprocessor(rate=0.5)])

A thin layer over ``rlpc_core``'s public API; needs ``pip install 'rlpc[llama-index]'``.
"""

from .postprocessor import FIGURES, RLPCNodePostprocessor

__all__ = ["FIGURES", "RLPCNodePostprocessor"]
