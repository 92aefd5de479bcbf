"""Measure the importance graph on real data (a benchmark, not a test).

* GSM8K test: share of numbers (any word with a digit, plus number words) that the graph protects.
* SQuAD v2 dev subset and NQ-open gold passages, with the question as query: do the words of the
  answer-bearing sentence score higher than the passage's other words? Reports the mean margin (answer-sentence
  mean score minus the others' mean, scores have mean ~1 per passage) and the share of rows where it holds,
  with and without the query, so the query's effect is visible.

    python benchmarks/graph_importance.py --data ../shared/data --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from rlpc_core import GraphConfig, score_words
from rlpc_core.words import split_words

_SENT_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def _read(path: Path):
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


# An independent definition of "a number", so the check does not grade the graph with its own rule.
_NUMBER = re.compile(r"\d+(?:[.,/]\d+)*")
_NUMBER_WORDS = set("one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty "
                    "hundred thousand million half twice double triple dozen".split())


def gsm8k_numbers(path: Path, config: GraphConfig, rate: float) -> dict:
    """Share of numbers the graph protects, and of questions whose every number survives compression at ``rate``."""
    from rlpc_core import Compressor

    compressor = Compressor(graph=config)
    digit_words = digit_protected = word_numbers = word_protected = questions = survived = 0
    ratios = []
    for row in _read(path):
        question = row["question"]
        words = question.split()
        s = score_words(words, config)
        for w, p in zip(words, s.protected):
            if _NUMBER.search(w):
                digit_words += 1
                digit_protected += bool(p)
            elif re.sub(r"[^a-z]", "", w.lower()) in _NUMBER_WORDS:
                word_numbers += 1
                word_protected += bool(p)
        result = compressor.compress(question, rate=rate)
        ratios.append(result.ratio)
        kept = result.text
        survived += all(n in kept for n in _NUMBER.findall(question))
        questions += 1
    return {"questions": questions, "digit_words": digit_words, "digit_words_protected_share": digit_protected / digit_words,
            "number_words": word_numbers, "number_words_protected_share": word_protected / word_numbers,
            "rate": rate, "tokenizer": compressor.config.tokenizer, "mean_ratio": float(np.mean(ratios)),
            "questions_with_every_number_kept_share": survived / questions}


def _sentence_ids(text: str, words) -> np.ndarray:
    ends = [m.end() for m in _SENT_END.finditer(text)]
    return np.searchsorted(np.asarray(ends, dtype=np.int64), words.starts, side="right")


def answer_sentence_margin(rows, config: GraphConfig) -> dict:
    """rows: (context, question, answer_start) triples."""
    out = {}
    for label, use_query in (("with_query", True), ("without_query", False)):
        margins, holds = [], []
        for context, question, start in rows:
            words = split_words(context)
            if len(words) < 20:
                continue
            sids = _sentence_ids(context, words)
            answer_sid = int(np.searchsorted([m.end() for m in _SENT_END.finditer(context)], start, side="right"))
            in_answer = sids == answer_sid
            if in_answer.all() or not in_answer.any():
                continue
            scores = score_words(words.tokens, config, query=question if use_query else None).scores
            margin = float(scores[in_answer].mean() - scores[~in_answer].mean())
            margins.append(margin)
            holds.append(margin > 0)
        out[label] = {"rows": len(margins), "mean_margin": float(np.mean(margins)), "share_higher": float(np.mean(holds))}
    return out


def squad_rows(path: Path):
    for r in _read(path):
        if not r.get("is_impossible") and r["answers"]["text"]:
            yield r["context"], r["question"], r["answers"]["answer_start"][0]


def nq_rows(path: Path, limit: int):
    n = 0
    for r in _read(path):
        ctx = r["ctxs"][0]["text"] if r.get("ctxs") else ""
        for ans in r["answers"]:
            pos = ctx.find(ans)
            if pos >= 0:
                yield ctx, r["question"], pos
                n += 1
                break
        if n >= limit:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--nq-limit", type=int, default=500)
    args = parser.parse_args()
    config = GraphConfig()
    t0 = time.perf_counter()
    results = {
        "config": config.__dict__,
        "gsm8k_test": gsm8k_numbers(args.data / "gsm8k" / "test.jsonl", config, rate=0.5),
        "squad_v2_dev_subset": answer_sentence_margin(
            list(squad_rows(args.data / "squad_v2_dev_subset" / "squad_v2_dev_first5articles.jsonl")), config),
        "nq_open_gold_passage": answer_sentence_margin(
            list(nq_rows(args.data / "nq_open_oracle" / "nq_open_oracle_first500.jsonl", args.nq_limit)), config),
    }
    results["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "graph_importance.json").write_text(json.dumps(results, indent=2) + "\n")
    g = results["gsm8k_test"]
    lines = [
        "# Importance graph on real data",
        "",
        "Generated by `python benchmarks/graph_importance.py`; numbers from `graph_importance.json`.",
        "",
        f"GSM8K test ({g['questions']} questions): the graph protects {g['digit_words_protected_share']:.1%} of "
        f"{g['digit_words']} words holding digits and {g['number_words_protected_share']:.1%} of {g['number_words']} "
        f"number words (one, twelve, half, twice, ...). Compressed by the default compressor at rate {g['rate']} "
        f"(mean ratio {g['mean_ratio']:.3f} in {g['tokenizer']} tokens), {g['questions_with_every_number_kept_share']:.1%} "
        "of questions keep every number.",
        "",
        "Answer-bearing sentence vs the rest of the passage (word scores have mean ~1 per passage):",
        "",
        "| data | query | rows | mean margin | share of rows where the answer sentence scores higher |",
        "|---|---|---:|---:|---:|",
    ]
    for name in ("squad_v2_dev_subset", "nq_open_gold_passage"):
        for label in ("with_query", "without_query"):
            r = results[name][label]
            lines.append(f"| {name} | {label.replace('_', ' ')} | {r['rows']} | {r['mean_margin']:+.3f} | {r['share_higher']:.1%} |")
    (args.out / "graph_importance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
