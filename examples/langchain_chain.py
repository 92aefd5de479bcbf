"""An LCEL chain that compresses GSM8K questions before a local LLM answers them.

    python examples/langchain_chain.py --data ../shared/data/gsm8k/test.jsonl --limit 3

chain = RLPromptCompressor(keys=["question"]) | ChatPromptTemplate | SmolLM2ChatModel | StrOutputParser.
The compressor's figures arrive through LangChain's callbacks (a handler's ``on_custom_event``), which is how a
tracer sees the tokens saved. Replace SmolLM2ChatModel with your chat model (ChatOpenAI, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.prompts import ChatPromptTemplate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_generate import chat_generate  # noqa: E402

from langchain_rlpc import COMPRESSION_EVENT, RLPromptCompressor  # noqa: E402

ROLE = {"human": "user", "ai": "assistant", "system": "system"}


class SmolLM2ChatModel(BaseChatModel):
    """A small local chat model for examples and tests (embedded SmolLM2-135M-Instruct, greedy)."""

    model: str = "smollm2-135m-instruct"
    max_new_tokens: int = 48

    @property
    def _llm_type(self) -> str:
        return "rlpc-local-chat"

    def _generate(self, messages: list[BaseMessage], stop: Optional[list[str]] = None, run_manager=None,
                  **kwargs: Any) -> ChatResult:
        chat = [{"role": ROLE.get(m.type, "user"), "content": m.text} for m in messages]
        text = chat_generate(chat, model=self.model, max_new_tokens=self.max_new_tokens)
        for s in stop or []:
            text = text.split(s)[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class TokensSaved(BaseCallbackHandler):
    """Collects the compressor's figures from the callback stream, as a tracer would."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        if name == COMPRESSION_EVENT:
            self.events.append(data)


def build_chain(rate: float, llm: BaseChatModel):
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Solve the math problem. Give the final answer after ####."),
        ("human", "{question}"),
    ])
    return RLPromptCompressor(keys=["question"], rate=rate) | prompt | llm | StrOutputParser()


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=default, help="GSM8K-style JSONL with a 'question' field")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.6)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"--data {args.data} does not exist; pass a JSONL file with a 'question' field")

    rows = []
    with args.data.open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) >= args.limit:
                break
    chain = build_chain(args.rate, SmolLM2ChatModel(max_new_tokens=args.max_new_tokens))
    tracer = TokensSaved()
    answers = chain.batch([{"question": r["question"]} for r in rows], config={"callbacks": [tracer]})
    for row, answer, event in zip(rows, answers, tracer.events):
        gold = row.get("answer", "").split("####")[-1].strip()
        kept = all(t["protected_ok"] for t in event["texts"])
        print(f"Q: {row['question']}\n   tokens {event['original_tokens']} -> {event['compressed_tokens']}"
              f" ({event['tokenizer']}); every number and protected span kept: {kept}")
        print(f"   answer: {answer[:160]!r}  (gold {gold})\n")
    original = sum(e["original_tokens"] for e in tracer.events)
    saved = sum(e["saved_tokens"] for e in tracer.events)
    print(f"tokens saved: {saved} of {original} ({saved / max(original, 1):.0%}) over {len(rows)} questions")


if __name__ == "__main__":
    main()
