#!/usr/bin/env bash
# The lowest versions pyproject.toml allows, tested: a separate .venv-lowest with every direct dependency at the
# lower bound of its range (the extras langchain, llama-index, train and dev), then the tests that exercise them.
#   bash scripts/lowest.sh            # set up (once) and run the unit, adapter and recipe tests
#   bash scripts/lowest.sh -k recipe  # pytest arguments pass through
# torch is the exception: the CPU build 2.13.0 is the one these machines carry (no other build is reachable), so
# torch's lower bound is stated, not tested here. The reader extra (llama-cpp-python) is left out: its lowest
# version is the one scripts/dev.sh builds, which the default suite already tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv-lowest
want="$(cat pyproject.toml scripts/lowest.sh | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$want" ]; then
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # every ">=X" (or "==X") of the direct dependencies as "==X"; torch as above
  "$VENV/bin/python" - > "$VENV/lowest.txt" <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(project["dependencies"])
for extra in ("langchain", "llama-index", "train", "dev"):
    reqs += project["optional-dependencies"][extra]
for req in reqs:
    m = re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*(?:>=|==)\s*([^,;\s]+)", req)
    if m and m.group(1) != "torch":
        print(f"{m.group(1)}=={m.group(2)}")
print("torch==2.13.0")
EOF
  echo "rlpc: installing the lowest allowed versions into $VENV (log: $VENV/install.log)" >&2
  { "$VENV/bin/python" -m pip install --disable-pip-version-check "torch==2.13.0" &&
    "$VENV/bin/python" -m pip install --disable-pip-version-check -c "$VENV/lowest.txt" \
      -e ".[langchain,llama-index,train,dev]"; } > "$VENV/install.log" 2>&1 ||
    { tail -n 30 "$VENV/install.log" >&2; echo "rlpc: the lowest versions do not install together (log: $VENV/install.log)" >&2; exit 1; }
  echo "$want" > "$VENV/.stamp"
fi
"$VENV/bin/python" -m pip freeze --disable-pip-version-check | grep -iE "^(transformers|tokenizers|trl|peft|accelerate|datasets|sentence-transformers|langchain-core|langchain-classic|llama-index-core|networkx|numpy|torch)==" >&2
# the models the tests load (cached under ~/.cache/rlpc, shared with .venv)
"$VENV/bin/rlpc" models pull all-minilm-l6-v2 smollm2-135m-instruct --quiet
HF_HUB_OFFLINE=1 exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit \
  tests/integration/test_llama_index_adapter.py tests/integration/test_training.py -k "not sigkill and not accelerate" "$@"
