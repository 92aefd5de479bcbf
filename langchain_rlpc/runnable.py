"""``RLPromptCompressor``: put prompt compression anywhere in an LCEL chain.

It returns what it was given, compressed: a string, a dict (chosen keys), a prompt value, or messages (chosen
roles). Every text of one ``invoke`` or ``batch`` goes to the core in a single ``compress_batch`` call, and the
figures of each call are sent to LangChain's callbacks as the custom event ``rlpc_compression`` (visible to
callback handlers' ``on_custom_event`` and in ``astream_events``).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence, Union

from langchain_core.callbacks import dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, model_validator

from rlpc_core import check_budget
from rlpc_core.adapters import CompressorArguments

COMPRESSION_EVENT = "rlpc_compression"
ROLES = ("human", "system", "ai", "tool")


class RLPromptCompressor(CompressorArguments, RunnableSerializable[Any, Any]):
    """Compress prompts inside a chain; ``RLPromptCompressor()`` uses rlpc's embedded default compressor.

    Example::

        chain = {"context": retriever | join, "question": RunnablePassthrough()} \\
            | RLPromptCompressor(keys=["context"], query_key="question", rate=0.5) \\
            | prompt | llm

    The compressor is ``compressor=``, or built from ``policy=``, ``tokenizer=``, ``checkpoint=`` and
    ``compressor_kwargs=`` (see :class:`rlpc_core.adapters.CompressorArguments`); unknown arguments are errors.
    """

    #: Share of tokens to keep, or a token budget per text; neither means the compressor's default rate.
    rate: Union[float, Literal["auto"], None] = None
    target_tokens: Optional[int] = None
    #: dict inputs: keys to compress (default: every string value except ``query_key``).
    keys: Optional[list[str]] = None
    #: dict inputs: key holding the question; compression keeps what answers it, and it is never compressed.
    query_key: Optional[str] = None
    #: message inputs: roles whose content is compressed (system, AI and tool messages are left alone by default).
    roles: tuple[str, ...] = ("human",)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @model_validator(mode="after")
    def _check(self) -> "RLPromptCompressor":
        check_budget(self.rate, self.target_tokens)
        bad = [r for r in self.roles if r not in ROLES]
        if bad:
            raise ValueError(f"roles={list(self.roles)!r} has unknown role(s) {bad}: use any of {list(ROLES)}")
        if self.keys is not None and self.query_key in self.keys:
            raise ValueError(f"query_key={self.query_key!r} is also in keys={self.keys!r}: the question is what "
                             "compression keeps faith with, so it is never compressed; remove it from keys")
        return self

    @classmethod
    def is_lc_serializable(cls) -> bool:
        return False  # holds a model; rebuild it from its settings instead

    # -- Runnable interface
    def invoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:
        return self._call_with_config(lambda x, config: self._run([x], config)[0], input, config)

    def batch(self, inputs: list[Any], config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        return self._batch_with_config(self._run_batch, inputs, config, return_exceptions=return_exceptions)

    async def ainvoke(self, input: Any, config: Optional[RunnableConfig] = None, **kwargs: Any) -> Any:
        # the core is synchronous and CPU-bound: run it in the executor so the event loop keeps serving
        return await run_in_executor(config, self.invoke, input, config)

    async def abatch(self, inputs: list[Any], config=None, *, return_exceptions: bool = False, **kwargs: Any) -> list[Any]:
        first = config[0] if isinstance(config, list) and config else config
        return await run_in_executor(first, self.batch, inputs, config, return_exceptions=return_exceptions)

    # -- the work: gather every text of every input, compress them in one batch, put them back
    def _run_batch(self, inputs: list[Any], config: list[RunnableConfig]) -> list[Any]:
        """One output per input, or the exception that input raised: a bad input never fails the good ones
        (``batch(return_exceptions=True)`` hands the exceptions back; without it the first one is raised)."""
        plans: list[Any] = []
        for x in inputs:
            try:
                plans.append(self._plan(x))
            except Exception as exc:  # noqa: BLE001 - handed back as that input's result
                plans.append(exc)
        good = [p for p in plans if not isinstance(p, Exception)]
        try:
            results = iter(self._compress(good))
        except Exception:  # noqa: BLE001 - one text failed the batch: compress each input alone to isolate it
            results = None
        outputs: list[Any] = []
        for plan, cfg in zip(plans, config):
            if isinstance(plan, Exception):
                outputs.append(plan)
                continue
            try:
                mine = [next(results) for _ in plan.texts] if results is not None else self._compress([plan])
                outputs.append(plan.rebuild([r.text for r in mine]))
            except Exception as exc:  # noqa: BLE001
                outputs.append(exc)
                continue
            if mine:
                dispatch_custom_event(COMPRESSION_EVENT, _summary(mine), config=cfg)
        return outputs

    def _compress(self, plans: list["_Plan"]) -> list:
        texts = [t for plan in plans for t in plan.texts]
        queries = [plan.query for plan in plans for _ in plan.texts]
        if not texts:
            return []
        return self.compressor.compress_batch(texts, rate=self.rate, target_tokens=self.target_tokens,
                                              query=queries, protect=self.protect or None)

    def _run(self, inputs: list[Any], config: RunnableConfig) -> list[Any]:
        out = self._run_batch(inputs, [config])
        if isinstance(out[0], Exception):
            raise out[0]
        return out

    def _plan(self, value: Any) -> "_Plan":
        if isinstance(value, str):
            return _Plan([value], None, lambda out: out[0])
        if isinstance(value, StringPromptValue):
            return _Plan([value.text], None, lambda out: StringPromptValue(text=out[0]))
        if isinstance(value, ChatPromptValue):
            plan = self._plan_messages(value.messages)
            return _Plan(plan.texts, None, lambda out: ChatPromptValue(messages=plan.rebuild(out)))
        if isinstance(value, BaseMessage):
            plan = self._plan_messages([value])
            return _Plan(plan.texts, None, lambda out: plan.rebuild(out)[0])
        if isinstance(value, Sequence) and value and all(isinstance(m, BaseMessage) for m in value):
            return self._plan_messages(list(value))
        if isinstance(value, dict):
            return self._plan_dict(value)
        if isinstance(value, Document):
            return _Plan([value.page_content], None,
                         lambda out: value.model_copy(update={"page_content": out[0]}))
        supported = "str, dict, PromptValue (StringPromptValue, ChatPromptValue), a message or a list of messages, Document"
        raise TypeError(f"RLPromptCompressor cannot compress a {type(value).__name__}: supported inputs are "
                        f"{supported}; convert the value to one of them first")

    def _plan_dict(self, value: dict) -> "_Plan":
        query = None
        if self.query_key is not None:
            if self.query_key not in value:
                raise KeyError(f"query_key {self.query_key!r} is not in the input dict (keys: {sorted(value)}); "
                               "pass it or set query_key=None")
            query = value[self.query_key]
            if not isinstance(query, str):
                raise TypeError(f"input[{self.query_key!r}] must be a str question, got {type(query).__name__}")
        if self.keys is not None:
            missing = [k for k in self.keys if k not in value]
            if missing:
                raise KeyError(f"keys {missing} are not in the input dict (keys: {sorted(value)}); "
                               "fix keys= or the step before the compressor")
            chosen = list(self.keys)
        else:
            chosen = [k for k, v in value.items() if isinstance(v, str) and k != self.query_key]
        for key in chosen:
            if not isinstance(value[key], str):
                raise TypeError(f"input[{key!r}] is a {type(value[key]).__name__}, not a str: keys= may name only "
                                "text values; join documents into text first")

        def rebuild(out: list[str]) -> dict:
            new = dict(value)
            new.update(zip(chosen, out))
            return new

        return _Plan([value[k] for k in chosen], query, rebuild)

    def _plan_messages(self, messages: list[BaseMessage]) -> "_Plan":
        # (message index, content-block index or None) of every text to compress
        slots: list[tuple[int, Optional[int]]] = []
        texts: list[str] = []
        for i, message in enumerate(messages):
            if message.type not in self.roles:
                continue
            if isinstance(message.content, str):
                slots.append((i, None))
                texts.append(message.content)
            else:  # multimodal content: compress the text blocks, leave images and the rest alone
                for j, block in enumerate(message.content):
                    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                        slots.append((i, j))
                        texts.append(block["text"])

        def rebuild(out: list[str]) -> list[BaseMessage]:
            new = list(messages)
            for (i, j), text in zip(slots, out):
                if j is None:
                    new[i] = new[i].model_copy(update={"content": text})
                else:
                    blocks = list(new[i].content)
                    blocks[j] = {**blocks[j], "text": text}
                    new[i] = new[i].model_copy(update={"content": blocks})
            return new

        return _Plan(texts, None, rebuild)


class _Plan:
    """The texts one input contributes to the batch, its question, and how to put the outputs back."""

    def __init__(self, texts: list[str], query: Optional[str], rebuild) -> None:
        self.texts, self.query, self.rebuild = texts, query, rebuild


def _summary(results) -> dict[str, Any]:
    original = sum(r.original_tokens for r in results)
    compressed = sum(r.compressed_tokens for r in results)
    return {
        "original_tokens": original,
        "compressed_tokens": compressed,
        "saved_tokens": original - compressed,
        "ratio": compressed / original if original else 1.0,
        "tokenizer": results[0].tokenizer,
        "texts": [r.figures() for r in results],
    }
