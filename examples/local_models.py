"""Local models for LlamaIndex examples: MiniLM embeddings and SmolLM2 answers, both embedded in rlpc (no hub).

    from local_models import MiniLMEmbedding, SmolLM2LLM
    index = VectorStoreIndex(nodes, embed_model=MiniLMEmbedding())
    engine = index.as_query_engine(llm=SmolLM2LLM(), node_postprocessors=[...])

Swap these for your own embedder and LLM (OpenAI, vLLM, ...): the rlpc postprocessor does not depend on them.
Models load on first use and are shared through ``rlpc_core.models``.
"""

from __future__ import annotations

from typing import Any, List

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback

from local_generate import chat_generate


class MiniLMEmbedding(BaseEmbedding):
    """Sentence embeddings (normalised, so dot product = cosine) from an rlpc model spec; default all-MiniLM-L6-v2."""

    model_name: str = "all-minilm-l6-v2"

    @classmethod
    def class_name(cls) -> str:
        return "MiniLMEmbedding"

    def _embed(self, texts: List[str]) -> List[List[float]]:
        from rlpc_core.models import load_sentence_embedder

        model = load_sentence_embedder(self.model_name)
        return model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False).tolist()

    def _get_query_embedding(self, query: str) -> List[float]:
        return self._embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> List[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> List[float]:
        return self._embed([text])[0]

    def _get_text_embeddings(self, texts: List[str]) -> List[List[float]]:
        return self._embed(list(texts))


class SmolLM2LLM(CustomLLM):
    """A local chat model (default SmolLM2-135M-Instruct) answering through its chat template, greedily."""

    model: str = "smollm2-135m-instruct"
    max_new_tokens: int = 32
    context_window: int = 8192  # SmolLM2's max_position_embeddings

    @classmethod
    def class_name(cls) -> str:
        return "SmolLM2LLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.max_new_tokens, model_name=self.model)

    def _generate(self, prompt: str) -> str:
        return chat_generate([{"role": "user", "content": prompt}], model=self.model, max_new_tokens=self.max_new_tokens)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self._generate(prompt))

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self._generate(prompt)
        yield CompletionResponse(text=text, delta=text)
