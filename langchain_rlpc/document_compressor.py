"""``RLPCDocumentCompressor``: compress each retrieved document on its own, question-aware.

For ``langchain_classic.retrievers.ContextualCompressionRetriever``. Unlike compressors that join every document
into one text and split it again, each document keeps its identity, its metadata and its place in the list; the
figures are added to its metadata under ``rlpc_*`` keys.
"""

from __future__ import annotations

import asyncio
from typing import Optional, Sequence

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, model_validator

from rlpc_core import Compressor, check_budget


class RLPCDocumentCompressor(BaseDocumentCompressor):
    compressor: Compressor = Field(default_factory=Compressor)
    rate: Optional[float] = None
    target_tokens: Optional[int] = None
    #: Compress with the retriever's query, so what answers it is kept.
    query_aware: bool = True
    protect: list[str] = Field(default_factory=list)
    metadata_prefix: str = "rlpc_"

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
        results = self.compressor.compress_batch(
            [docs[i].page_content for i in todo], rate=self.rate, target_tokens=self.target_tokens,
            query=query if self.query_aware else None, protect=self.protect or None,
        )
        out = list(docs)
        for i, result in zip(todo, results):
            metadata = dict(docs[i].metadata)
            metadata.update({self.metadata_prefix + k: v for k, v in result.figures().items()})
            out[i] = docs[i].model_copy(update={"page_content": result.text, "metadata": metadata})
        return out

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Optional[Callbacks] = None
    ) -> list[Document]:
        return await asyncio.to_thread(self.compress_documents, documents, query, callbacks)
