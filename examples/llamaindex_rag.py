"""Retrieval-augmented QA in LlamaIndex with every retrieved passage compressed by rlpc before the LLM reads it.

    python examples/llamaindex_rag.py                       # SQuAD v2 dev passages from ../shared/data
    python examples/llamaindex_rag.py --limit 3 --rate 0.4 --top-k 2
    python examples/llamaindex_rag.py --limit 3 --shared-budget --guide llamacpp:qwen2.5-coder-0.5b-instruct

Builds a VectorStoreIndex over SQuAD passages with real MiniLM embeddings, answers questions with
SmolLM2-135M-Instruct (both embedded in rlpc, no hub needed), and puts ``RLPCNodePostprocessor`` between the
retriever and the LLM. For each question it prints the answer, the tokens of the retrieved passages before and
after compression (from each node's ``rlpc_*`` metadata), and whether the gold answer survived compression in
the gold passage when that passage was retrieved.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rlpc_core import check_rate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad_v2_dev_subset" / "squad_v2_dev_first5articles.jsonl"
QA_PROMPT = (
    "Context:\n{context_str}\n\n"
    "Answer the question using only the context above, in a few words.\n"
    "Question: {query_str}\nAnswer: "
)


def load_squad(path: Path, n_passages: int, limit: int):
    """The first ``n_passages`` unique passages, and up to ``limit`` answerable questions, one per passage."""
    passages: dict[str, dict] = {}
    questions: list[dict] = []
    asked: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            ctx = row["context"]
            if ctx not in passages:
                if len(passages) >= n_passages:
                    break
                passages[ctx] = {"id": f"{row['title']}-{row['paragraph_index']}", "title": row["title"],
                                 "paragraph": row["paragraph_index"]}
            if row["answers"]["text"] and ctx not in asked and len(questions) < limit:
                asked.add(ctx)
                questions.append({"question": row["question"], "answers": row["answers"]["text"],
                                  "gold_id": passages[ctx]["id"]})
    return passages, questions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"SQuAD-style JSONL (default: {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, default=5, help="questions to ask (default 5)")
    parser.add_argument("--rate", type=float, default=0.5, help="share of each passage's tokens to keep (default 0.5)")
    parser.add_argument("--top-k", type=int, default=2, help="passages retrieved per question (default 2)")
    parser.add_argument("--passages", type=int, default=60, help="passages to index (default 60)")
    parser.add_argument("--shared-budget", action="store_true",
                        help="one budget for all the passages of a question (irrelevant ones shrink first)")
    parser.add_argument("--guide", metavar="READER", help="a small reader that answers the question first, so the "
                        "sentences holding its answer rank first, e.g. llamacpp:qwen2.5-coder-0.5b-instruct "
                        "(rlpc models pull qwen2.5-coder-0.5b-instruct --format gguf)")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"--data {args.data} does not exist; pass a SQuAD-style JSONL file "
                     "(fields: context, question, answers.text, title, paragraph_index)")
    try:
        check_rate(args.rate)
    except ValueError as err:
        parser.error(str(err))
    for name in ("limit", "top_k", "passages"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")

    # heavy imports after argument checks, so a usage error answers at once
    from llama_index.core import PromptTemplate, VectorStoreIndex
    from llama_index.core.schema import TextNode

    from llama_index_rlpc import RLPCNodePostprocessor
    from local_models import MiniLMEmbedding, SmolLM2LLM

    postprocessor = RLPCNodePostprocessor(rate=args.rate, shared_budget=args.shared_budget,
                                          compressor_kwargs={"guide": args.guide} if args.guide else None)

    start = time.perf_counter()
    passages, questions = load_squad(args.data, args.passages, args.limit)
    nodes = [TextNode(text=ctx, id_=p["id"], metadata={"title": p["title"], "paragraph": p["paragraph"]})
             for ctx, p in passages.items()]
    index = VectorStoreIndex(nodes, embed_model=MiniLMEmbedding())
    engine = index.as_query_engine(llm=SmolLM2LLM(max_new_tokens=32), similarity_top_k=args.top_k,
                                   node_postprocessors=[postprocessor],
                                   text_qa_template=PromptTemplate(QA_PROMPT))
    print(f"indexed {len(nodes)} passages in {time.perf_counter() - start:.1f} s; "
          f"asking {len(questions)} questions, rate {args.rate}, top-k {args.top_k}\n")

    before = after = retrieved_gold = survived = answered = 0
    for i, q in enumerate(questions, 1):
        response = engine.query(q["question"])
        golds = [a.lower() for a in q["answers"]]
        print(f"[{i}] {q['question']}")
        print(f"    answer: {str(response).strip()!r}  (gold: {q['answers'][0]!r})")
        answered += any(g in str(response).lower() for g in golds)
        for sn in response.source_nodes:
            meta = sn.node.metadata
            orig, comp = meta.get("rlpc_original_tokens", 0), meta.get("rlpc_compressed_tokens", 0)
            before, after = before + orig, after + comp
            mark = ""
            if sn.node.node_id == q["gold_id"]:
                retrieved_gold += 1
                kept = any(g in sn.node.get_content().lower() for g in golds)
                survived += kept
                mark = f"  gold passage, answer {'survived' if kept else 'LOST'}"
            print(f"    {sn.node.node_id:<40} score {sn.score:.3f}  {orig} -> {comp} tokens{mark}")
        print()

    n = len(questions)
    print(f"totals over {n} questions: {before} -> {after} tokens in retrieved passages, "
          f"saved {before - after} ({(before - after) / max(before, 1):.0%})")
    print(f"gold passage retrieved for {retrieved_gold}/{n}; gold answer survived compression in "
          f"{survived}/{retrieved_gold} of those ({survived / max(retrieved_gold, 1):.0%})")
    print(f"model answer contains the gold answer: {answered}/{n}; elapsed {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
