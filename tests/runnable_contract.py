"""A reusable contract for Runnables that transform prompts (in the style of langchain-tests' standard tests).

Subclass ``RunnableContract`` in a ``Test*`` class and provide the ``runnable`` fixture; every input type must come
out as the same type, and invoke / batch / async / stream must agree, propagate config and callbacks, and fail
clearly on bad input.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue, StringPromptValue

PASSAGE = ("The harbour of Valdoria handled 4,200 ships in 1911, most of them steamers carrying grain, coal and "
           "timber from the northern provinces. A new lighthouse, built by the engineer Marta Ilves, opened in 1913 "
           "and cut the number of wrecks at the harbour mouth from eleven a year to two.")


def sample_inputs() -> dict[str, Any]:
    return {
        "str": PASSAGE,
        "dict": {"context": PASSAGE, "question": "Who built the lighthouse?"},
        "string_prompt_value": StringPromptValue(text=PASSAGE),
        "chat_prompt_value": ChatPromptValue(messages=[SystemMessage(content="You answer questions."),
                                                       HumanMessage(content=PASSAGE)]),
        "messages": [SystemMessage(content="You answer questions."), HumanMessage(content=PASSAGE),
                     AIMessage(content="Noted."), HumanMessage(content=PASSAGE)],
        "message": HumanMessage(content=PASSAGE),
        "document": Document(page_content=PASSAGE, metadata={"source": "atlas", "page": 3}),
    }


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[dict] = []
        self.events: list[tuple[str, Any]] = []

    def on_chain_start(self, serialized, inputs, *, tags=None, metadata=None, **kwargs) -> None:
        self.starts.append({"tags": tags or [], "metadata": metadata or {}, "name": kwargs.get("name")})

    def on_custom_event(self, name, data, **kwargs) -> None:
        self.events.append((name, data))


def text_of(value: Any) -> str:
    """All the text a value carries, for length comparisons."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(v for v in value.values() if isinstance(v, str))
    if isinstance(value, StringPromptValue):
        return value.text
    if isinstance(value, ChatPromptValue):
        return text_of(value.messages)
    if isinstance(value, list):
        return " ".join(text_of(v) for v in value)
    if isinstance(value, Document):
        return value.page_content
    return value.text  # a message


class RunnableContract:
    """Contract tests; the subclass supplies ``runnable`` (a fixture) and may override ``event_name``."""

    event_name: str = ""

    @pytest.fixture(params=list(sample_inputs()))
    def case(self, request):
        return request.param, sample_inputs()[request.param]

    def test_same_type_out_and_shorter(self, runnable, case):
        name, value = case
        out = runnable.invoke(value)
        assert type(out) is type(value), name
        assert len(text_of(out).split()) < len(text_of(value).split()), name

    def test_invoke_batch_async_and_stream_agree(self, runnable, case):
        _, value = case
        expected = runnable.invoke(value)
        assert runnable.batch([value, value]) == [expected, expected]
        assert asyncio.run(runnable.ainvoke(value)) == expected
        assert asyncio.run(runnable.abatch([value])) == [expected]
        assert list(runnable.stream(value)) == [expected]

        async def collect():
            return [chunk async for chunk in runnable.astream(value)]

        assert asyncio.run(collect()) == [expected]

    def test_config_and_callbacks_propagate(self, runnable):
        recorder = Recorder()
        runnable.invoke(PASSAGE, config={"callbacks": [recorder], "tags": ["t1"], "metadata": {"m": 1},
                                         "run_name": "compress-step"})
        assert recorder.starts and recorder.starts[0]["name"] == "compress-step"
        assert "t1" in recorder.starts[0]["tags"] and recorder.starts[0]["metadata"].get("m") == 1
        if self.event_name:
            assert [n for n, _ in recorder.events] == [self.event_name]

    def test_batch_callbacks_reach_each_input(self, runnable):
        recorders = [Recorder(), Recorder()]
        runnable.batch([PASSAGE, PASSAGE], config=[{"callbacks": [r]} for r in recorders])
        assert all(r.starts for r in recorders)
        if self.event_name:
            assert all(len(r.events) == 1 for r in recorders)

    def test_astream_events_carry_the_figures(self, runnable):
        if not self.event_name:
            pytest.skip("this runnable sends no custom event")

        async def collect():
            return [e async for e in runnable.astream_events(PASSAGE, version="v2")]

        events = asyncio.run(collect())
        custom = [e for e in events if e["event"] == "on_custom_event" and e["name"] == self.event_name]
        assert len(custom) == 1 and custom[0]["data"]["saved_tokens"] > 0

    def test_unsupported_input_is_a_clear_error(self, runnable):
        with pytest.raises(TypeError, match="cannot compress a int"):
            runnable.invoke(42)
        out = runnable.batch([PASSAGE, 42], return_exceptions=True)
        # one result per input: the good input is compressed, only the bad one is an exception
        assert out[0] == runnable.invoke(PASSAGE) and isinstance(out[1], TypeError)
        with pytest.raises(TypeError, match="cannot compress a int"):
            runnable.batch([PASSAGE, 42])

    def test_shared_instance_across_threads(self, runnable):
        inputs = list(sample_inputs().values()) * 3
        expected = [runnable.invoke(v) for v in inputs]
        with ThreadPoolExecutor(max_workers=6) as pool:
            assert list(pool.map(runnable.invoke, inputs)) == expected
