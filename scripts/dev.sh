#!/usr/bin/env bash
# One entry point for a fresh clone: set up .venv (idempotent, quiet on a second run), then run a job.
#   bash scripts/dev.sh demo   -> compress an example GSM8K prompt with the embedded default compressor
#   bash scripts/dev.sh test   -> run the offline test suite
#   bash scripts/dev.sh setup  -> only set up
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"; shift || true

PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.rlpc-setup-stamp"
LLAMA_VERSION=0.3.36  # keep in step with the reader extra in pyproject.toml
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
# Inside pip's own cache folder, so that whatever keeps pip's cache between runs (CI does) keeps this wheel too.
PIP_CACHE="$("$PY" -m pip cache dir 2>/dev/null || echo "${XDG_CACHE_HOME:-$HOME/.cache}/pip")"
LLAMA_WHEELS="$PIP_CACHE/rlpc-llama-wheels/$(echo "$LLAMA_VERSION $LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)"
# The stamp records what was installed; a changed pyproject.toml or script triggers a re-install.
want="$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "rlpc: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "rlpc: installing dependencies into $VENV (first run takes a few minutes; log: $VENV/install.log)" >&2
  {
    # torch first, pinned: anything later that depends on torch then finds it satisfied and never pulls a CUDA build.
    "$VENV/bin/python" -m pip install --disable-pip-version-check "torch==2.13.0" &&
    # llama-cpp-python (the reader extra) has no wheel for this platform: build llama.cpp once into a wheel kept
    # under a folder named after the build flags, so a wheel built with other flags (pip's own cache) is never
    # reused. Portable AVX2 on purpose: the native build of 0.3.36 on AVX-512/AMX hosts segfaults in decode with
    # SmolLM2's Q4_1 GGUF, and a portable wheel survives being cached and moved between machines.
    if [ ! -f "$LLAMA_WHEELS/.complete" ]; then
      mkdir -p "$LLAMA_WHEELS" &&
      CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
        "$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-deps --no-cache-dir \
        -w "$LLAMA_WHEELS" "llama-cpp-python==$LLAMA_VERSION" &&
      touch "$LLAMA_WHEELS/.complete"
    fi &&
    "$VENV/bin/python" -m pip install --disable-pip-version-check --find-links "$LLAMA_WHEELS" -e ".[all,dev]" \
      "llama-cpp-python[server]==$LLAMA_VERSION"
  } > "$VENV/install.log" 2>&1 || { tail -n 30 "$VENV/install.log" >&2; echo "rlpc: install failed (full log: $VENV/install.log)" >&2; exit 1; }
  echo "$want" > "$STAMP"
fi
# Fetch and verify the embedded models once (no-op when already cached); SmolLM2's GGUF is the reader the tests
# serve with llama.cpp. The 1.5B judge (1.1 GB) is optional: `rlpc models pull qwen2.5-coder-1.5b-instruct`.
"$VENV/bin/rlpc" models pull all-minilm-l6-v2 smollm2-135m-instruct --quiet
"$VENV/bin/rlpc" models pull smollm2-135m-instruct --format gguf --quiet

case "$job" in
  setup) ;;
  demo) exec "$VENV/bin/rlpc" compress --example "$@" ;;
  # tests run offline by design: no hub look-ups (an unreachable hub id otherwise retries for ~50 s)
  test) HF_HUB_OFFLINE=1 exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *) echo "rlpc: unknown job '$job'; use one of: demo, test, setup" >&2; exit 2 ;;
esac
