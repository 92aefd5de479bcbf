#!/usr/bin/env bash
# Downstream accuracy with a capable reader: how much Qwen2.5-Coder-1.5B-Instruct (llama.cpp) loses on the
# compressed prompt against the original, per method and rate, on held-out rows, with paired CIs; then the pooled
# summary (JSON, Markdown, PNG) and the README's quality block. Many hours on 2 CPU cores the first time; the
# reader's answers are cached (sqlite, keyed by the GGUF's sha256 and the exact prompt) and every compression is
# kept in OUT/compressions.jsonl, so a stopped run resumes where it stopped (RESUME=1 reuses the compressions).
#   bash benchmarks/run_reader.sh [squad|nq|squad-multi|nq-20docs|gsm8k|gsm8k-fewshot ...]
# Knobs: READER (default llamacpp:qwen2.5-coder-1.5b-instruct; serve:ALIAS runs it behind a real server;
# openai:URL#MODEL for your own endpoint), SCORER (LLMLingua's scorer, default qwen2.5-coder-0.5b-instruct),
# LIMIT_QA / LIMIT_MULTI / LIMIT_DOCS / LIMIT_MATH (rows), THREADS, OUT (results folder), RATES (default 0.33,0.5; add auto for
# the dynamic rate), BEFORE (an earlier results folder: its compressions are reused where the method and its
# settings are unchanged, the peers', and the summary shows its graph and extractive rows as "(before)"), EXTRA
# (more methods, comma-separated: a trained run's folder, e.g. EXTRA=checkpoints/minilm-reader; graph+guide, the graph
# with the 0.5B guide), REUSE (a results
# folder whose compressions are reused, as BEFORE's, without showing its rows as "(before)"), QA_METHODS /
# MATH_METHODS (the method lists, e.g. a shorter one for a quick run), MATH_NEW_TOKENS (the reader's answer budget on
# GSM8K, default 512: the 1.5B writes ~300-token solutions and ran out of 256 on 54% of few-shot prompts, of 512 on 5%),
# README_BLOCK=1 (rewrite the README's table from this run; a full run with no datasets named always does).
#   OUT=benchmarks/results/reader-meaning RATES=0.33,0.5,auto BEFORE=benchmarks/results/reader bash benchmarks/run_reader.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
READER=${READER:-llamacpp:qwen2.5-coder-1.5b-instruct}
SCORER=${SCORER:-qwen2.5-coder-0.5b-instruct}
THREADS=${THREADS:-2}
OUT=${OUT:-benchmarks/results/reader}
RATES=${RATES:-0.33,0.5}
QA_METHODS=${QA_METHODS:-graph,extractive,longllmlingua,llmlingua,truncate,random,none}
# GSM8K has no separate question to rank documents by (the question setting compresses the question itself; the
# few-shot setting compresses the worked examples once, without the question, as LLMLingua does): LongLLMLingua's
# question-aware ranking does not apply, LLMLingua-1 is the peer there as in LLMLingua's own GSM8K experiments.
MATH_METHODS=${MATH_METHODS:-graph,extractive,llmlingua,truncate,random,none}
if [ -n "${EXTRA:-}" ]; then QA_METHODS="$EXTRA,$QA_METHODS"; MATH_METHODS="$EXTRA,$MATH_METHODS"; fi
${PY} -m rlpc_core.cli models pull qwen2.5-coder-1.5b-instruct --format gguf --quiet
# a method with a guide (graph+guide: rlpc_core.guide) asks Qwen2.5-Coder-0.5B under llama.cpp first
case ",$QA_METHODS,$MATH_METHODS," in *+guide,*) ${PY} -m rlpc_core.cli models pull qwen2.5-coder-0.5b-instruct --format gguf --quiet ;; esac
run() {  # dataset, split, limit, methods
  resume=${RESUME:+--resume}
  src=${REUSE:-${BEFORE:-}}
  if [ -n "$src" ] && [ -f "$src/$1/compressions.jsonl" ]; then
    mkdir -p "$OUT/$1"
    [ -f "$OUT/$1/compressions.jsonl" ] || cp "$src/$1/compressions.jsonl" "$OUT/$1/compressions.jsonl"
    # keys hold each method's settings and a fingerprint of rlpc's code and weights: only unchanged ones are reused
    resume=--resume
  fi
  $PY -m benchmarks.evaluate --dataset "$1" --split "$2" --limit "$3" --methods "$4" --rate "$RATES" \
    --reader "$READER" --peer-scorer "$SCORER" --evaluator none --feedback all-minilm-l6-v2 \
    --math-max-new-tokens "${MATH_NEW_TOKENS:-512}" --threads "$THREADS" --seed 0 --quiet $resume --out "$OUT/$1"
}
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(squad nq squad-multi nq-20docs gsm8k gsm8k-fewshot)
for ds in "${datasets[@]}"; do
  case "$ds" in
    squad) run squad heldout "${LIMIT_QA:-150}" "$QA_METHODS" ;;
    nq) run nq heldout "${LIMIT_QA:-150}" "$QA_METHODS" ;;
    squad-multi) run squad-multi heldout "${LIMIT_MULTI:-60}" "$QA_METHODS" ;;
    nq-20docs) run nq-20docs heldout "${LIMIT_DOCS:-60}" "$QA_METHODS" ;;
    gsm8k) run gsm8k test "${LIMIT_MATH:-100}" "$MATH_METHODS" ;;
    gsm8k-fewshot) run gsm8k-fewshot test "${LIMIT_MATH:-100}" "$MATH_METHODS" ;;
    *) echo "unknown dataset $ds (use squad, nq, squad-multi, nq-20docs, gsm8k, gsm8k-fewshot)" >&2; exit 2 ;;
  esac
done
# The README's table is rewritten only by a full run (no datasets named) or when asked (README_BLOCK=1): a run of one
# or two sets must not replace the README's figures with its own.
readme=()
if [ ${#@} -eq 0 ] || [ "${README_BLOCK:-}" = 1 ]; then readme=(--readme README.md); fi
$PY -m benchmarks.reader_summary "$OUT" ${BEFORE:+--before "$BEFORE"} "${readme[@]}"
