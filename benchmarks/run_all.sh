#!/usr/bin/env bash
# Regenerates the committed benchmark results: rlpc's policies and the peers side by side on held-out rows, then
# the README's results section. A few hours on 2 CPU cores (the evaluator's disk cache makes re-runs cheaper).
#   bash benchmarks/run_all.sh [gsm8k|squad|nq|speed ...]
# Methods: `graph` (training-free), `extractive` (the embedded MiniLM compressor, or EXTRACTIVE=folder),
# the generative checkpoints trained by training/recipes/smollm2-cpu-gsm8k.yaml (GENERATIVE="runs/a,runs/b"; GSM8K
# only, skipped when absent) and the peers. SQuAD and NQ are measured on their `heldout` partitions, which the
# extractive recipe never trains on (training/data.py: partition_of). LIMIT=N changes the rows per dataset (200 for
# SQuAD and NQ, 100 for GSM8K, whose rewriting checkpoints take seconds a row); SPEED_ARGS passes options to the
# speed benchmark (e.g. "--threads 1 --samples 3 --repeats 2" for a shorter run).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
EXTRACTIVE=${EXTRACTIVE:-extractive}
# llmlingua2-arch carries random weights (DESIGN.md): its quality means nothing, so it is timed by the speed benchmark
PEERS=llmlingua,selective-context,random,truncate
WARMUP=${WARMUP:-runs/minilm-warmup}  # the extractive policy's supervised start, to show what GRPO added
[ -f "$WARMUP/rlpc.json" ] && start=",$WARMUP" || start=""
run() {  # dataset, split, rates, gen-limit, methods [, ll-limit]
  $PY -m benchmarks.evaluate --dataset "$1" --split "$2" --methods "$5" --rate "$3" --limit "${LIMIT:-200}" \
    --evaluator "${EVALUATOR:-smollm2-135m-instruct}" --feedback all-minilm-l6-v2 --gen-limit "$4" ${6:+--ll-limit "$6"} \
    --threads 1 --seed 0 --quiet --out "benchmarks/results/$1"
  $PY -m training.paired "benchmarks/results/$1" --reference graph  # per-row differences against the graph
}
generative=""
for g in $(echo "${GENERATIVE:-runs/smollm2-sft,runs/smollm2-grpo}" | tr ',' ' '); do
  [ -f "$g/rlpc.json" ] && generative="$generative,$g"
done
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(gsm8k squad nq speed)
for ds in "${datasets[@]}"; do
  case "$ds" in
    # 256-token generations: ~10 s each on one core, so a small labelled sample
    gsm8k) LIMIT=${LIMIT:-100} run gsm8k test 0.5 8 "graph,$EXTRACTIVE$generative,$PEERS,none" ;;
    # likelihood on a 48-row sample: 11 distinct texts a row
    squad) run squad heldout 0.33,0.5 16 "graph,$EXTRACTIVE$start,$PEERS,none" 48 ;;
    nq) run nq heldout 0.33,0.5 12 "graph,$EXTRACTIVE$start,$PEERS,none" 48 ;;
    speed) $PY benchmarks/extractive_speed.py ${EXTRACTIVE_WEIGHTS:+--weights "$EXTRACTIVE_WEIGHTS"} \
             ${SPEED_ARGS:-} --out benchmarks/results/extractive_speed ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
done
$PY -m benchmarks.report_readme benchmarks/results/*/metrics.json
