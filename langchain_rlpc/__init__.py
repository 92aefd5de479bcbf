"""LangChain adapter for rlpc: a Runnable that compresses prompts, and a document compressor for retrievers.

Thin on purpose: every decision about what to keep lives in :mod:`rlpc_core`.
"""

from .document_compressor import RLPCDocumentCompressor
from .runnable import COMPRESSION_EVENT, RLPromptCompressor

__all__ = ["COMPRESSION_EVENT", "RLPCDocumentCompressor", "RLPromptCompressor"]
