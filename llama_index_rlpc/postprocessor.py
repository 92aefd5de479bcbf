"""``RLPCNodePostprocessor``: compress the retrieved nodes before the LLM sees them, each on its own or under one
budget for all the nodes of a query.

A thin layer over ``rlpc_core``: all compression is the core's ``Compressor.compress_batch`` (per node) or
``Compressor.compress_shared`` (``shared_budget=True``: relevant nodes keep more, irrelevant ones shrink, possibly
to nothing, and are then dropped or kept empty as ``empty`` says). Each node keeps its id, metadata, relationships
and score, in the original order; only its text changes, and the figures of its compression are added to its
metadata under ``rlpc_*`` keys that neither the LLM nor the embedder is shown.
"""

from __future__ import annotations

import asyncio
from typing import Any, List, Literal, Optional, Union

from llama_index.core.bridge.pydantic import Field, field_validator, model_validator
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, Node, NodeWithScore, QueryBundle, TextNode

from rlpc_core import CompressionResult, check_budget, check_rate, check_target_tokens
from rlpc_core.adapters import CompressorArguments

#: The figures added to each compressed node's metadata (under ``metadata_prefix``).
FIGURES = CompressionResult.FIGURES


class RLPCNodePostprocessor(CompressorArguments, BaseNodePostprocessor):
    """Compress each retrieved node's text with an rlpc ``Compressor``, question-aware when a query is given.

    The compressor is ``compressor=`` or built from ``policy=``, ``tokenizer=``, ``checkpoint=`` and
    ``compressor_kwargs=``; unknown arguments are errors that list the valid ones.

    >>> from llama_index.core import VectorStoreIndex          # doctest: +SKIP
    >>> engine = index.as_query_engine(node_postprocessors=[RLPCNodePostprocessor(rate=0.5)])  # doctest: +SKIP
    """

    rate: Optional[Union[float, Literal["auto"]]] = Field(
        default=None, description="Share of each node's tokens to keep, or 'auto' (keep what is relevant to the query, "
                                  "the rate follows); None with no target_tokens: the compressor's default rate.")
    target_tokens: Optional[int] = Field(
        default=None, description="Token budget per node (in the compressor's tokenizer); exclusive with rate.")
    query_aware: bool = Field(default=True, description="Pass the query to the compressor so question words survive.")
    metadata_prefix: str = Field(default="rlpc_", description="Prefix of the metadata keys holding the figures.")
    shared_budget: bool = Field(
        default=False, description="One budget for all the nodes of a query (rate of all their tokens, or "
                                   "target_tokens for all): relevant nodes keep more, irrelevant ones may vanish.")
    empty: Literal["drop", "keep"] = Field(
        default="drop", description="With a shared budget, a node compressed to nothing is dropped or kept empty.")

    # mode="before": the core's checks see the value as given (pydantic would turn "0.5" into 0.5 first)
    @field_validator("rate", mode="before")
    @classmethod
    def _check_rate(cls, value: Any) -> Optional[Union[float, str]]:
        return None if value is None or value == "auto" else check_rate(value)

    @field_validator("target_tokens", mode="before")
    @classmethod
    def _check_target_tokens(cls, value: Any) -> Optional[int]:
        return None if value is None else check_target_tokens(value)

    @field_validator("metadata_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        if not value:
            raise ValueError("metadata_prefix='' would let the figures overwrite the node's own metadata keys; "
                             "pass a non-empty prefix such as 'rlpc_'")
        return value

    @model_validator(mode="after")
    def _check_budget(self) -> "RLPCNodePostprocessor":
        check_budget(self.rate, self.target_tokens)
        return self

    @classmethod
    def class_name(cls) -> str:
        return "RLPCNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        if not nodes:
            return []
        texts = [_text_of(n.node) for n in nodes]
        todo = [i for i, t in enumerate(texts) if t is not None and t.strip()]
        if not todo:
            return list(nodes)
        query = query_bundle.query_str if (self.query_aware and query_bundle is not None) else None
        compress = self.compressor.compress_shared if self.shared_budget else self.compressor.compress_batch
        results = compress(
            [texts[i] for i in todo], rate=self.rate, target_tokens=self.target_tokens,
            query=query or None, protect=list(self.protect),
        )
        out: List[Optional[NodeWithScore]] = list(nodes)
        for i, result in zip(todo, results):
            if self.shared_budget and not result.text.strip() and self.empty == "drop":
                out[i] = None
                continue
            out[i] = NodeWithScore(node=self._compressed_copy(nodes[i].node, result), score=nodes[i].score)
        return [n for n in out if n is not None]

    async def _apostprocess_nodes(
        self, nodes: List[NodeWithScore], query_bundle: Optional[QueryBundle] = None
    ) -> List[NodeWithScore]:
        # compression is CPU-bound: run it in a worker thread so the event loop stays free
        return await asyncio.to_thread(self._postprocess_nodes, nodes, query_bundle)

    def _compressed_copy(self, node: BaseNode, result: CompressionResult) -> BaseNode:
        figures = {f"{self.metadata_prefix}{name}": value for name, value in result.figures().items()}
        keys = list(figures)
        # A shallow copy with fresh metadata dict and key lists: the caller's node objects are never mutated.
        copy = node.model_copy(update={
            "metadata": {**node.metadata, **figures},
            "excluded_llm_metadata_keys": _extend(node.excluded_llm_metadata_keys, keys),
            "excluded_embed_metadata_keys": _extend(node.excluded_embed_metadata_keys, keys),
        })
        copy.set_content(result.text)
        return copy


def _text_of(node: BaseNode) -> Optional[str]:
    """The node's own text (no metadata), or None for a node kind that carries no text to compress."""
    if isinstance(node, TextNode):
        return node.text if isinstance(node.text, str) else None
    if isinstance(node, Node) and node.text_resource is not None:
        return node.text_resource.text
    return None


def _extend(keys: List[str], more: List[str]) -> List[str]:
    return list(keys) + [k for k in more if k not in keys]


__all__ = ["FIGURES", "RLPCNodePostprocessor"]
