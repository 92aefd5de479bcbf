#!/usr/bin/env bash
# Regenerates the committed benchmark results (issue 5): peers side by side with the graph policy on held-out
# rows, then the README's results section. About an hour and a half on 2 CPU cores.
#   bash benchmarks/run_all.sh [gsm8k|squad|nq ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
PY=.venv/bin/python
METHODS=graph,llmlingua,llmlingua2-arch,selective-context,random,truncate,none
run() {  # dataset, rates, gen-limit [, ll-limit]
  $PY -m training.evaluate --dataset "$1" --methods "$METHODS" --rate "$2" --limit 200 \
    --evaluator "${EVALUATOR:-smollm2-135m-instruct}" --feedback all-minilm-l6-v2 --gen-limit "$3" ${4:+--ll-limit "$4"} --threads 1 --seed 0 \
    --quiet --out "benchmarks/results/$1"
}
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(gsm8k squad nq)
for ds in "${datasets[@]}"; do
  case "$ds" in
    gsm8k) run gsm8k 0.5 8 ;;        # 256-token generations: ~10 s each on one core, so a small labelled sample
    squad) run squad 0.33,0.5 16 48 ;;   # likelihood on a 48-row sample: 11 distinct texts a row
    # nq: llmlingua2-arch is latency-only and already measured on squad and gsm8k
    nq) METHODS=${METHODS/llmlingua2-arch,/} run nq 0.33,0.5 12 ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
done
$PY -m training.report_readme benchmarks/results/*/metrics.json
