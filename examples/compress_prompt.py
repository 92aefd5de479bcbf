"""Compress prompts from a JSONL file with the embedded default compressor and print what was saved.

    python examples/compress_prompt.py --data ../shared/data/gsm8k/test.jsonl --field question --limit 5
    python examples/compress_prompt.py --data my_prompts.jsonl --field prompt --rate 0.4 --query-field question
    python examples/compress_prompt.py --data ../shared/data/squad_v2_dev_subset/squad_v2_dev_first5articles.jsonl \
        --field context --query-field question --policy extractive    # the shipped MiniLM compressor

Any JSONL file works: name the field that holds the prompt (and, optionally, a field with the question the
prompt must still answer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlpc_core import Compressor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a JSONL file, one prompt per line")
    parser.add_argument("--field", default="question", help="field holding the prompt (default: question)")
    parser.add_argument("--query-field", help="field holding the question, for question-aware compression")
    parser.add_argument("--rate", type=float, default=0.5, help="share of tokens to keep (default 0.5)")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--policy", default=None, help="graph (the default), extractive, or a checkpoint folder")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"--data {args.data} does not exist; pass a JSONL file")

    if args.policy and Path(args.policy).is_dir():
        compressor = Compressor.from_pretrained(args.policy)
    else:
        compressor = Compressor(policy=args.policy) if args.policy else Compressor()
    rows = []
    with args.data.open(encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) >= args.limit:
                break
    prompts = [row[args.field] for row in rows]
    queries = [row.get(args.query_field) for row in rows] if args.query_field else None
    results = compressor.compress_batch(prompts, rate=args.rate, query=queries)
    for result in results:
        print(result.text)
        print(f"  {result.original_tokens} -> {result.compressed_tokens} tokens ({result.tokenizer}), "
              f"protected spans kept: {result.protected_ok}\n")
    saved = sum(r.saved_tokens for r in results)
    total = sum(r.original_tokens for r in results)
    print(f"saved {saved} of {total} tokens ({saved / max(total, 1):.0%}) over {len(results)} prompts")


if __name__ == "__main__":
    main()
