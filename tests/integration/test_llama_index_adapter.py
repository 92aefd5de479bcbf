"""LlamaIndex adapter: RLPCNodePostprocessor on its own, inside a real query engine (sync and async), and the example."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, List

import pytest

pytest.importorskip("llama_index.core", reason="llama-index-core is not installed: pip install 'rlpc[llama-index]'")

from llama_index.core import VectorStoreIndex  # noqa: E402
from llama_index.core.bridge.pydantic import Field  # noqa: E402
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata  # noqa: E402
from llama_index.core.llms.callbacks import llm_completion_callback  # noqa: E402
from llama_index.core.schema import (  # noqa: E402
    ImageNode, MetadataMode, NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode,
)

from adapter_contract import AdapterArgumentsContract  # noqa: E402
from conftest import DATA, read_jsonl  # noqa: E402
from llama_index_rlpc import FIGURES, RLPCNodePostprocessor  # noqa: E402
from rlpc_core import Compressor  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))  # the example's local model wrappers, shared with these tests
from local_models import MiniLMEmbedding  # noqa: E402

PASSAGES = {
    "harbour": "The harbour town hosts a fishing festival every summer with boats, nets and grilled sardines on the "
               "pier. Visitors queue for smoked mackerel and watch the regatta from the sea wall until sunset.",
    "lighthouse": "The old lighthouse keeper paints the tower white every April and keeps a brass lantern burning "
                  "through stormy winter nights. He logs every passing ship in a leather book beside the lamp.",
    "bakery": "The bakery on the main square sells rye bread, almond pastries and honey cakes to early customers. "
              "Its ovens are lit at four in the morning and the last loaf is usually gone by nine.",
    "council": "The town council debates parking fees, road repairs and a new bicycle lane near the station. The "
               "mayor wants the lane finished before the tourist season, but the budget vote keeps slipping.",
}
ALL_TEXT = " ".join(PASSAGES.values())


def nodes_with_scores() -> List[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=text, id_=key, metadata={"topic": key, "rank": i},
                                        excluded_llm_metadata_keys=["rank"],
                                        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"doc-{key}")}),
                          score=1.0 - i / 10)
            for i, (key, text) in enumerate(PASSAGES.items())]


class Spy:
    """Wraps a compressor's compress_batch, recording each call and the thread it ran in."""

    def __init__(self, compressor: Compressor):
        self.calls: list[dict[str, Any]] = []
        self._inner = compressor.compress_batch

    def __call__(self, texts, **kwargs):
        self.calls.append({"texts": list(texts), "thread": threading.current_thread(), **kwargs})
        return self._inner(texts, **kwargs)


@pytest.fixture
def spied(word_compressor, monkeypatch):
    spy = Spy(word_compressor)
    monkeypatch.setattr(word_compressor, "compress_batch", spy)
    return word_compressor, spy


# ---------------------------------------------------------------- the postprocessor on its own

class TestNodePostprocessorArguments(AdapterArgumentsContract):
    adapter = RLPCNodePostprocessor

    def compress(self, obj, text):
        nodes = obj.postprocess_nodes([NodeWithScore(node=TextNode(text=text), score=1.0)],
                                      query_str="When will the parcel arrive?")
        return nodes[0].node.get_content()


def test_one_output_per_node_in_order_with_ids_metadata_scores_kept(word_compressor):
    pp = RLPCNodePostprocessor(rate=0.5, compressor=word_compressor)
    nodes = nodes_with_scores()
    out = pp.postprocess_nodes(nodes, query_bundle=QueryBundle("What does the lighthouse keeper paint?"))
    assert [n.node.node_id for n in out] == list(PASSAGES)
    assert [n.score for n in out] == [n.score for n in nodes]
    for before, after in zip(nodes, out):
        meta = after.node.metadata
        assert {k: meta[k] for k in before.node.metadata} == before.node.metadata
        assert after.node.relationships == before.node.relationships
        assert meta["rlpc_original_tokens"] == len(before.node.text.split())
        assert 0 < meta["rlpc_compressed_tokens"] <= round(0.5 * meta["rlpc_original_tokens"])
        assert meta["rlpc_ratio"] == pytest.approx(meta["rlpc_compressed_tokens"] / meta["rlpc_original_tokens"])
        assert meta["rlpc_method"] == "graph" and meta["rlpc_tokenizer"] == "words"
        assert meta["rlpc_protected_ok"] is True and meta["rlpc_fallback"] is None
        assert set(f"rlpc_{f}" for f in FIGURES) <= set(meta)
        assert len(after.node.text.split()) == meta["rlpc_compressed_tokens"]


def test_figures_are_hidden_from_llm_and_embedder(word_compressor):
    pp = RLPCNodePostprocessor(rate=0.5, compressor=word_compressor)
    node = pp.postprocess_nodes(nodes_with_scores())[0].node
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        content = node.get_content(metadata_mode=mode)
        assert "rlpc_" not in content and node.text in content and "topic: harbour" in content
    assert "rank" not in node.get_content(metadata_mode=MetadataMode.LLM)  # the caller's own exclusions stay
    assert "rlpc_ratio" in node.get_content(metadata_mode=MetadataMode.ALL)
    assert node.excluded_llm_metadata_keys[0] == "rank"


def test_input_nodes_are_not_mutated(word_compressor):
    pp = RLPCNodePostprocessor(rate=0.5, compressor=word_compressor, metadata_prefix="cmp_")
    nodes = nodes_with_scores()
    snapshot = [n.model_dump() for n in nodes]
    out = pp.postprocess_nodes(nodes, query_str="Who paints the tower?")
    assert [n.model_dump() for n in nodes] == snapshot
    assert all(a is not b and a.node is not b.node for a, b in zip(out, nodes))
    assert "cmp_ratio" in out[0].node.metadata and "cmp_ratio" in out[0].node.excluded_embed_metadata_keys


def test_question_aware_keeps_the_words_the_query_is_about(word_compressor):
    # one node holding four topics; each query asks about one of them
    queries = {"harbour": "What do visitors eat at the harbour fishing festival?",
               "lighthouse": "What does the lighthouse keeper paint and keep burning?",
               "bakery": "What does the bakery on the main square sell?",
               "council": "What does the town council debate?"}
    words = {t: {w.strip(".,").lower() for w in text.split()} for t, text in PASSAGES.items()}
    own = {t: words[t] - set().union(*(words[o] for o in words if o != t)) for t in words}  # only in topic t
    pp = RLPCNodePostprocessor(rate=0.3, compressor=word_compressor)
    node = [NodeWithScore(node=TextNode(text=ALL_TEXT), score=0.5)]

    def kept(query_str):
        [out] = pp.postprocess_nodes(node, query_str=query_str)
        found = [w.strip(".,").lower() for w in out.node.text.split()]
        return {t: sum(w in own[t] for w in found) for t in own}

    blind = kept(None)
    asked = {q_topic: kept(q) for q_topic, q in queries.items()}
    for topic in own:  # a topic's words survive best when the query is about that topic (whole sentences: a
        others = [blind[topic]] + [asked[q][topic] for q in queries if q != topic]  # blind pass may tie)
        assert asked[topic][topic] >= max(others) and asked[topic][topic] > min(others), (topic, asked[topic][topic], others)
    assert sum(asked[t][t] for t in own) >= 1.5 * sum(blind.values())
    no_query_aware = RLPCNodePostprocessor(rate=0.3, compressor=word_compressor, query_aware=False)
    [out] = no_query_aware.postprocess_nodes(node, query_str=queries["bakery"])
    assert out.node.text == pp.postprocess_nodes(node)[0].node.text


def test_one_batch_call_and_pass_through_of_nodes_without_text(spied):
    compressor, spy = spied
    pp = RLPCNodePostprocessor(target_tokens=12, compressor=compressor, protect=["brass lantern", re.compile(r"\d+")])
    nodes = nodes_with_scores()
    empty = NodeWithScore(node=TextNode(text="   ", id_="blank"), score=0.3)
    image = NodeWithScore(node=ImageNode(image_url="https://example.com/x.png", id_="img"), score=0.2)
    mixed = [nodes[0], empty, nodes[1], image, nodes[2]]
    out = pp.postprocess_nodes(mixed, query_str="When is the tower painted?")
    assert len(spy.calls) == 1
    call = spy.calls[0]
    assert call["texts"] == [PASSAGES["harbour"], PASSAGES["lighthouse"], PASSAGES["bakery"]]
    assert call["query"] == "When is the tower painted?" and call["target_tokens"] == 12 and call["rate"] is None
    assert [n.node.node_id for n in out] == ["harbour", "blank", "lighthouse", "img", "bakery"]
    assert out[1] is empty and out[3] is image and "rlpc_ratio" not in image.node.metadata
    assert "brass lantern" in out[2].node.text and out[2].node.metadata["rlpc_protected_ok"] is True
    assert all(n.node.metadata["rlpc_compressed_tokens"] <= 12 for n in (out[0], out[4]))


def test_no_query_bundle_and_empty_list(spied):
    compressor, spy = spied
    pp = RLPCNodePostprocessor(rate=0.5, compressor=compressor)
    assert pp.postprocess_nodes([]) == [] and spy.calls == []
    out = pp.postprocess_nodes(nodes_with_scores())
    assert len(out) == len(PASSAGES) and spy.calls[0]["query"] is None


@pytest.mark.parametrize("bad", [{"rate": 0}, {"rate": 1.5}, {"rate": "0.5"}, {"rate": float("nan")},
                                 {"target_tokens": 0}, {"target_tokens": 2.5},
                                 {"rate": 0.5, "target_tokens": 10}, {"metadata_prefix": ""}])
def test_bad_settings_fail_at_construction(bad):
    with pytest.raises(ValueError, match=r"rate|target_tokens|metadata_prefix"):
        RLPCNodePostprocessor(**bad)


def test_defaults_and_class_name():
    pp = RLPCNodePostprocessor()
    assert isinstance(pp.compressor, Compressor) and pp.compressor.config.policy == "graph"
    assert pp.compressor is not RLPCNodePostprocessor().compressor
    assert RLPCNodePostprocessor.class_name() == "RLPCNodePostprocessor" == pp.to_dict()["class_name"]


def test_async_path_runs_off_the_event_loop_thread(spied):
    compressor, spy = spied
    pp = RLPCNodePostprocessor(rate=0.5, compressor=compressor)
    nodes = nodes_with_scores()
    out = asyncio.run(pp.apostprocess_nodes(nodes, query_str="Who paints the tower?"))
    assert [n.node.node_id for n in out] == list(PASSAGES)
    assert out[1].node.text == pp.postprocess_nodes(nodes, query_str="Who paints the tower?")[1].node.text
    assert spy.calls[0]["thread"] is not threading.main_thread()


# ---------------------------------------------------------------- inside a real query engine

class RecordingLLM(CustomLLM):
    """Returns a fixed answer and keeps every prompt, so a test can check what the LLM was shown."""

    prompts: List[str] = Field(default_factory=list)

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=4096, num_output=16, model_name="recording")

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        self.prompts.append(prompt)
        return CompletionResponse(text="fixed answer")

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        yield self.complete(prompt, formatted=formatted, **kwargs)


@pytest.fixture(scope="module")
def index():
    nodes = [TextNode(text=text, id_=key, metadata={"topic": key}) for key, text in PASSAGES.items()]
    return VectorStoreIndex(nodes, embed_model=MiniLMEmbedding())


def check_engine_response(index, response, llm, query):
    retrieved = index.as_retriever(similarity_top_k=2).retrieve(query)
    assert retrieved[0].node.node_id == "lighthouse"  # real MiniLM retrieval
    assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in retrieved]
    assert [n.score for n in response.source_nodes] == pytest.approx([n.score for n in retrieved])
    [prompt] = llm.prompts
    assert str(response) == "fixed answer" and "rlpc_" not in prompt
    for sn in response.source_nodes:
        meta = sn.node.metadata
        assert meta["topic"] == sn.node.node_id and meta["rlpc_tokenizer"] == "smollm2-135m-instruct"
        assert meta["rlpc_compressed_tokens"] < meta["rlpc_original_tokens"]
        assert sn.node.text in prompt and PASSAGES[sn.node.node_id] not in prompt
    assert "lantern" in response.source_nodes[0].node.text  # question-aware: the asked-about words survive


def test_query_engine_llm_sees_compressed_nodes(index):
    llm = RecordingLLM()
    engine = index.as_query_engine(llm=llm, similarity_top_k=2,
                                   node_postprocessors=[RLPCNodePostprocessor(rate=0.5)])  # the default Compressor
    query = "What does the lighthouse keeper keep burning on stormy nights?"
    check_engine_response(index, engine.query(query), llm, query)


def test_async_query_engine_llm_sees_compressed_nodes(index):
    llm = RecordingLLM()
    engine = index.as_query_engine(llm=llm, similarity_top_k=2, use_async=True,
                                   node_postprocessors=[RLPCNodePostprocessor(rate=0.5)])
    query = "What does the lighthouse keeper keep burning on stormy nights?"
    check_engine_response(index, asyncio.run(engine.aquery(query)), llm, query)


# ---------------------------------------------------------------- the example, run as a user runs it

def _run_example(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "examples" / "llamaindex_rag.py"), *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


def test_llamaindex_rag_example_on_squad():
    read_jsonl("squad_v2_dev_subset/squad_v2_dev_first5articles.jsonl", limit=1)  # skips where the data is absent
    p = _run_example("--data", str(DATA / "squad_v2_dev_subset" / "squad_v2_dev_first5articles.jsonl"),
                     "--limit", "2", "--passages", "12")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "totals over 2 questions" in p.stdout and "saved" in p.stdout
    assert "gold answer survived compression" in p.stdout


def test_llamaindex_rag_example_rejects_bad_input(tmp_path):
    p = _run_example("--data", str(tmp_path / "missing.jsonl"))
    assert p.returncode == 2 and "does not exist" in p.stderr
    data = tmp_path / "rows.jsonl"
    data.write_text("{}\n")
    p = _run_example("--data", str(data), "--rate", "0")
    assert p.returncode == 2 and "rate=0.0 is outside" in p.stderr


def test_one_budget_for_all_nodes_of_a_query(word_compressor):
    pp = RLPCNodePostprocessor(rate=0.3, compressor=word_compressor, shared_budget=True)
    nodes = nodes_with_scores()
    total = sum(len(n.node.text.split()) for n in nodes)
    out = pp.postprocess_nodes(nodes, query_bundle=QueryBundle("What does the lighthouse keeper paint every April?"))
    kept = {n.node.node_id: n for n in out}
    # the answer, its article optional: a kept sentence's short form may cut "the" (filler) before "in" or "every"
    assert "lighthouse" in kept and re.search(r"paints (the )?tower white", kept["lighthouse"].node.text), kept
    # the budget went where the query needs it: the lighthouse node keeps more than any other
    sizes = {k: len(n.node.text.split()) for k, n in kept.items()}
    assert sizes["lighthouse"] == max(sizes.values())
    assert sum(sizes.values()) <= round(0.3 * total) + 2
    assert [n.node.node_id for n in out] == [k for k in PASSAGES if k in kept]  # original order
    for n in out:  # ids, scores, relationships, metadata kept
        src = next(m for m in nodes if m.node.node_id == n.node.node_id)
        assert n.score == src.score and n.node.relationships == src.node.relationships
        assert n.node.metadata["topic"] == src.node.metadata["topic"]
    # nodes compressed to nothing are dropped by default, kept empty when asked
    empty_kept = RLPCNodePostprocessor(rate=0.1, compressor=word_compressor, shared_budget=True, empty="keep")
    all_out = empty_kept.postprocess_nodes(nodes, query_bundle=QueryBundle("What does the lighthouse keeper paint?"))
    assert [n.node.node_id for n in all_out] == list(PASSAGES) and any(n.node.text == "" for n in all_out)
    dropped = RLPCNodePostprocessor(rate=0.1, compressor=word_compressor, shared_budget=True)
    assert len(dropped.postprocess_nodes(nodes, query_bundle=QueryBundle("lighthouse keeper?"))) < len(nodes)
    with pytest.raises(ValueError):
        RLPCNodePostprocessor(shared_budget=True, empty="hide")
