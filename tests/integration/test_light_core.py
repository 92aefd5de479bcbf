"""The inference core is light: compressing with the default graph compressor imports neither torch nor
transformers, and a user's first call pays milliseconds, not the seconds of loading a deep-learning stack.

Each check runs in a fresh interpreter, the way a CLI call or a new worker process meets the library. Timings
take the best of a few runs: the machines are shared, and one slow run says more about a neighbour than about
the code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

PROMPT = " ".join(
    f"Paragraph {i}: the warehouse in Lyon shipped {40 + i} crates of ceramic tiles on March {i % 28 + 1}, 2024, "
    "but the customer did not receive the invoice, so the accounts team must not close the order yet."
    for i in range(20)
) + " Question: how many crates did the Lyon warehouse ship in paragraph 7?"

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
import rlpc_core
imported = time.perf_counter() - t0
c = rlpc_core.Compressor()
t1 = time.perf_counter()
r = c.compress(sys.stdin.read(), rate=0.5)
first = time.perf_counter() - t1
print(json.dumps({"import": imported, "first_call": first, "seconds": r.seconds, "load_seconds": r.load_seconds,
                  "tokens": r.original_tokens, "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


def _probe() -> dict:
    p = subprocess.run([sys.executable, "-c", PROBE], input=PROMPT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_default_compressor_never_imports_torch_or_transformers():
    probe = _probe()
    assert probe["heavy"] == [], f"the graph compressor imported {probe['heavy']}"
    assert 900 <= probe["tokens"] <= 1500, probe  # the prompt is the ~1k tokens the timing goals speak of


def test_first_compress_is_fast_and_reports_the_load_apart():
    runs = [_probe() for _ in range(3)]
    best = min(r["first_call"] for r in runs)
    assert best < 0.5, f"first compress() of a 1k-token prompt took {best:.2f} s (best of 3), goal < 0.5 s: {runs}"
    for r in runs:
        # the work and the one-off load are reported apart, and together they are the call
        assert r["seconds"] + r["load_seconds"] <= r["first_call"] + 1e-3, r


def test_cli_compress_end_to_end_stays_light():
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "rlpc_core", "compress", "--rate", "0.5"], input=PROMPT,
                           capture_output=True, text=True, timeout=120)
        walls.append(time.perf_counter() - t0)
        assert p.returncode == 0, p.stderr
        assert 0 < len(p.stdout.split()) < len(PROMPT.split())
    # The goal (issue #11): under 1 s. Measured on 4 December 2026 with a reader benchmark busy on both cores:
    # 0.64-0.74 s (importing rlpc_core ~0.26 s, numpy and networkx most of it; reading SmolLM2's tokenizer.json
    # ~0.10 s; the work ~0.03 s; Python itself ~0.05 s). Before the light core, importing torch alone cost seconds.
    assert min(walls) < 1.0, f"`rlpc compress` on a 1k-token prompt took {min(walls):.2f} s wall (best of 3), goal < 1 s"


def test_training_names_stay_importable_lazily():
    import rlpc_core

    assert callable(rlpc_core.build_rewards) and callable(rlpc_core.clean_rewrite)
    assert set(rlpc_core.__all__) <= set(dir(rlpc_core)) | set(rlpc_core._LAZY)
