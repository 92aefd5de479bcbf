"""The LangChain adapter: the Runnable contract, chains with a chat model, and the document compressor."""

import asyncio

import pytest

pytest.importorskip("langchain_core", reason="the langchain extra is not installed")

from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.retrievers import BaseRetriever  # noqa: E402

from langchain_rlpc import COMPRESSION_EVENT, RLPCDocumentCompressor, RLPromptCompressor  # noqa: E402
from rlpc_core import Compressor  # noqa: E402
from adapter_contract import AdapterArgumentsContract  # noqa: E402
from runnable_contract import PASSAGE, RunnableContract  # noqa: E402

WORDS = Compressor(tokenizer="words")


class TestRLPromptCompressorContract(RunnableContract):
    event_name = COMPRESSION_EVENT

    @pytest.fixture
    def runnable(self):
        return RLPromptCompressor(compressor=WORDS, rate=0.5, roles=("human",))


class TestRLPromptCompressorArguments(AdapterArgumentsContract):
    adapter = RLPromptCompressor

    def compress(self, obj, text):
        return obj.invoke(text)


class TestDocumentCompressorArguments(AdapterArgumentsContract):
    adapter = RLPCDocumentCompressor

    def compress(self, obj, text):
        return obj.compress_documents([Document(page_content=text)], query="When will the parcel arrive?")[0].page_content


class TestDefaultCompressorContract(RunnableContract):
    """The same contract with no arguments at all: the embedded default compressor and its tokenizer."""

    event_name = COMPRESSION_EVENT

    @pytest.fixture
    def runnable(self):
        return RLPromptCompressor()


def test_dict_keys_and_query_key():
    c = RLPromptCompressor(compressor=WORDS, rate=0.4, keys=["context"], query_key="question")
    value = {"context": PASSAGE, "question": "Who built the lighthouse?", "other": PASSAGE}
    out = c.invoke(value)
    assert out["question"] == value["question"] and out["other"] == PASSAGE  # only chosen keys change
    assert len(out["context"].split()) < len(PASSAGE.split()) and value["context"] == PASSAGE  # input untouched
    assert "Ilves" in out["context"] or "Marta" in out["context"]  # question-aware: who built it survives


def test_query_awareness_changes_what_is_kept():
    c = RLPromptCompressor(compressor=WORDS, rate=0.3, keys=["context"], query_key="question")
    ships = c.invoke({"context": PASSAGE, "question": "What cargo did the steamers carry?"})["context"]
    light = c.invoke({"context": PASSAGE, "question": "Who was the engineer of the lighthouse?"})["context"]
    assert ships != light
    assert sum(w in ships for w in ("grain", "coal", "timber")) > sum(w in light for w in ("grain", "coal", "timber"))


def test_missing_keys_are_clear_errors():
    with pytest.raises(KeyError, match=r"keys \['context'\] are not in the input dict"):
        RLPromptCompressor(compressor=WORDS, keys=["context"]).invoke({"ctx": PASSAGE})
    with pytest.raises(KeyError, match="query_key 'question'"):
        RLPromptCompressor(compressor=WORDS, query_key="question").invoke({"context": PASSAGE})
    with pytest.raises(TypeError, match=r"input\['context'\] is a list"):
        RLPromptCompressor(compressor=WORDS, keys=["context"]).invoke({"context": [PASSAGE]})


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(rate=0), r"rate=0(\.0)? is outside"),
    (dict(target_tokens=0), "target_tokens=0"),
    (dict(rate=0.5, target_tokens=10), "pass only one"),
    (dict(roles=("human", "robot")), "unknown role"),
    (dict(keys=["q"], query_key="q"), "never compressed"),
])
def test_bad_settings_fail_at_construction(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        RLPromptCompressor(compressor=WORDS, **kwargs)


def test_roles_choose_which_messages_change():
    msgs = [SystemMessage(content=PASSAGE), HumanMessage(content=PASSAGE), AIMessage(content=PASSAGE)]
    out = RLPromptCompressor(compressor=WORDS, rate=0.5).invoke(msgs)
    assert out[0].content == PASSAGE and out[2].content == PASSAGE and out[1].content != PASSAGE
    out = RLPromptCompressor(compressor=WORDS, rate=0.5, roles=("system", "ai")).invoke(msgs)
    assert out[0].content != PASSAGE and out[1].content == PASSAGE and out[2].content != PASSAGE


def test_multimodal_blocks_keep_images():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    msg = HumanMessage(content=[{"type": "text", "text": PASSAGE}, image])
    out = RLPromptCompressor(compressor=WORDS, rate=0.5).invoke(msg)
    assert out.content[1] == image and len(out.content[0]["text"]) < len(PASSAGE)


def test_empty_texts_pass_through():
    c = RLPromptCompressor(compressor=WORDS)
    assert c.invoke("") == "" and c.invoke({"a": "", "b": 3}) == {"a": "", "b": 3}
    assert c.invoke([HumanMessage(content="")])[0].content == ""


def test_batch_goes_through_one_core_batch_call(monkeypatch):
    core = Compressor(tokenizer="words")
    calls = []
    original = core.compress_batch
    monkeypatch.setattr(core, "compress_batch", lambda texts, **kw: calls.append(len(texts)) or original(texts, **kw))
    monkeypatch.setattr(core, "compress", lambda *a, **k: pytest.fail("batch must not loop over compress()"))
    RLPromptCompressor(compressor=core).batch([PASSAGE, {"x": PASSAGE, "y": PASSAGE}, [HumanMessage(content=PASSAGE)]])
    assert calls == [4]


class SeenByLLM(BaseCallbackHandler):
    def __init__(self):
        self.messages = []

    def on_chat_model_start(self, serialized, messages, **kwargs):
        self.messages.extend(messages)


def test_in_a_chain_the_llm_sees_the_compressed_prompt():
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{context}\n\nQ: {question}")])
    llm = GenericFakeChatModel(messages=iter([AIMessage(content="Marta Ilves")] * 4))
    chain = RLPromptCompressor(compressor=WORDS, rate=0.4, keys=["context"], query_key="question") | prompt | llm
    seen = SeenByLLM()
    answer = chain.invoke({"context": PASSAGE, "question": "Who built the lighthouse?"}, config={"callbacks": [seen]})
    assert answer.content == "Marta Ilves"
    human = seen.messages[0][1].content
    assert PASSAGE not in human and "Q: Who built the lighthouse?" in human
    assert len(human.split()) < len(PASSAGE.split())
    # the same after the prompt: compress the rendered ChatPromptValue's human message
    seen2 = SeenByLLM()
    chain2 = prompt | RLPromptCompressor(compressor=WORDS, rate=0.4) | llm
    asyncio.run(chain2.ainvoke({"context": PASSAGE, "question": "Who?"}, config={"callbacks": [seen2]}))
    assert seen2.messages[0][0].content == "Answer briefly." and PASSAGE not in seen2.messages[0][1].content


class FixedRetriever(BaseRetriever):
    docs: list

    def _get_relevant_documents(self, query, *, run_manager):
        return list(self.docs)


def test_document_compressor_in_a_contextual_compression_retriever():
    from langchain_classic.retrievers import ContextualCompressionRetriever

    docs = [Document(page_content=PASSAGE, metadata={"source": "atlas", "score": 0.9}, id="d1"),
            Document(page_content="", metadata={"source": "empty"}, id="d2"),
            Document(page_content=PASSAGE.replace("1913", "1920"), metadata={"source": "gazette"}, id="d3")]
    retriever = ContextualCompressionRetriever(
        base_compressor=RLPCDocumentCompressor(compressor=WORDS, rate=0.5), base_retriever=FixedRetriever(docs=docs))
    out = retriever.invoke("When did the lighthouse open?")
    assert [d.id for d in out] == ["d1", "d2", "d3"]  # one per input, order kept, nothing merged
    assert out[0].metadata["source"] == "atlas" and out[0].metadata["score"] == 0.9
    assert out[0].metadata["rlpc_original_tokens"] > out[0].metadata["rlpc_compressed_tokens"]
    assert "1913" in out[0].page_content and "1920" in out[2].page_content  # numbers survive
    assert out[1].page_content == "" and "rlpc_ratio" not in out[1].metadata
    assert docs[0].page_content == PASSAGE and "rlpc_ratio" not in docs[0].metadata  # inputs untouched
    assert [d.id for d in asyncio.run(retriever.ainvoke("When?"))] == ["d1", "d2", "d3"]


def test_document_compressor_validates_settings():
    with pytest.raises(ValueError, match="rate=2"):
        RLPCDocumentCompressor(rate=2)


def test_document_compressor_with_one_budget_for_all_documents():
    docs = [Document(page_content="The bakery on the main square sells rye bread and honey cakes.", id="bakery"),
            Document(page_content=PASSAGE, metadata={"source": "atlas"}, id="lighthouse"),
            Document(page_content="The council debates parking fees and a new bicycle lane near the station.",
                     id="council")]
    comp = RLPCDocumentCompressor(compressor=WORDS, rate=0.3, shared_budget=True)
    out = comp.compress_documents(docs, "When did the lighthouse open?")
    ids = [d.id for d in out]
    assert "lighthouse" in ids and ids == [d.id for d in docs if d.id in ids]  # order kept, emptied ones dropped
    light = out[ids.index("lighthouse")]
    assert "1913" in light.page_content and light.metadata["source"] == "atlas"
    assert sum(len(d.page_content.split()) for d in out) <= round(0.3 * sum(len(d.page_content.split()) for d in docs)) + 2
    keep_empty = RLPCDocumentCompressor(compressor=WORDS, rate=0.3, shared_budget=True, empty="keep")
    assert [d.id for d in keep_empty.compress_documents(docs, "When did the lighthouse open?")] == [d.id for d in docs]
