"""``RLPCDocumentCompressor``: compress the retrieved documents question-aware, each on its own or under one
budget for all of them.

For ``langchain_classic.retrievers.ContextualCompressionRetriever``. Each document keeps its identity, its metadata
and its place in the list; the figures are added to its metadata under ``rlpc_*`` keys. With
``shared_budget=True`` the budget (``rate`` of all their tokens, or ``target_tokens`` for all of them) is spent
where the query needs it: relevant documents keep more, irrelevant ones shrink, possibly to nothing, and are then
dropped (``empty="drop"``, the default) or kept with empty content (``empty="keep"``).
"""

from __future__ import annotations

import asyncio
from typing import Literal, Optional, Sequence, Union

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, model_validator

from rlpc_core import check_budget
from rlpc_core.adapters import CompressorArguments


class RLPCDocumentCompressor(CompressorArguments, BaseDocumentCompressor):
    """Compress retrieved documents; the compressor is ``compressor=`` or built from ``policy=``,
    ``tokenizer=``, ``checkpoint=``, ``compressor_kwargs=``; unknown arguments are errors."""

    rate: Union[float, Literal["auto"], None] = None
    target_tokens: Optional[int] = None
    #: Compress with the retriever's query, so what answers it is kept.
    query_aware: bool = True
    metadata_prefix: str = "rlpc_"
    #: One budget for all the documents of a query (relevant ones keep more), instead of one per document.
    shared_budget: bool = False
    #: With a shared budget, what happens to a document compressed to nothing: dropped, or kept empty.
    empty: Literal["drop", "keep"] = "drop"

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @model_validator(mode="after")
    def _check(self) -> "RLPCDocumentCompressor":
        check_budget(self.rate, self.target_tokens)
        return self

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Optional[Callbacks] = None
    ) -> list[Document]:
        docs = list(documents)
        todo = [i for i, d in enumerate(docs) if d.page_content.strip()]  # empty documents pass through untouched
        compress = self.compressor.compress_shared if self.shared_budget else self.compressor.compress_batch
        results = compress(
            [docs[i].page_content for i in todo], rate=self.rate, target_tokens=self.target_tokens,
            query=query if self.query_aware else None, protect=self.protect or None,
        )
        out: list[Optional[Document]] = list(docs)
        for i, result in zip(todo, results):
            if self.shared_budget and not result.text.strip() and self.empty == "drop":
                out[i] = None
                continue
            metadata = dict(docs[i].metadata)
            metadata.update({self.metadata_prefix + k: v for k, v in result.figures().items()})
            out[i] = docs[i].model_copy(update={"page_content": result.text, "metadata": metadata})
        return [d for d in out if d is not None]

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Optional[Callbacks] = None
    ) -> list[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
