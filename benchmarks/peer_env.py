"""The peers' own virtual environment: LLMLingua needs library versions rlpc itself cannot use.

llmlingua 0.2.2 breaks on transformers 5 (it expects tuple KV caches), so the benchmark builds it a separate
environment under ``cache_dir()/envs/llmlingua`` on first use and talks to it through a worker process
(:mod:`benchmarks.peer_worker`, stdlib + llmlingua only). What is installed there:

* ``torch==2.13.0`` first (the CPU build; installing it first keeps pip from pulling a multi-GB CUDA torch to
  satisfy a later requirement);
* ``transformers==4.46.3 llmlingua==0.2.2 llama-index-core==0.14.25``: llama-index-core only for the tiktoken
  ``cl100k_base`` file it ships (llmlingua loads that encoding at start and would otherwise download it).

Building is idempotent: a stamp file records the requirement list, and a lock serialises concurrent builders.
pip's output goes to ``install.log`` inside the environment. Also here: the model folders the peers load (the
embedded SmolLM2 for LLMLingua-1, a randomly initialised BERT of LLMLingua-2's smallest architecture).

    python -m benchmarks.peer_env            # build (or check) the environment and the model folders
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from rlpc_core.models import build_atomically, cache_dir, file_lock
from training.evaluate import MethodUnavailable

ENV_NAME = "llmlingua"
TORCH_REQUIREMENT = "torch==2.13.0"
REQUIREMENTS = ("transformers==4.46.3", "llmlingua==0.2.2", "llama-index-core==0.14.25")
#: Bump to force a rebuild of existing environments when the set-up itself changes.
SETUP_VERSION = 1
STAMP = ".rlpc-peer-env-stamp"
#: LLMLingua-2's mode insists on a model path containing this name (or ``xlm-roberta-large``).
BERT_ARCH_FOLDER = "bert-base-multilingual-cased-random-init"
#: bert-base-multilingual-cased's architecture (its config.json): the smallest model LLMLingua-2 ships.
BERT_MULTILINGUAL_CASED = {
    "vocab_size": 119547, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
    "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-12,
    "pad_token_id": 0, "num_labels": 2,
}


class PeerEnvError(MethodUnavailable):
    """The peer environment could not be built or used; the message says what failed and where the log is."""


def env_dir() -> Path:
    return cache_dir() / "envs" / ENV_NAME


def env_python(env: Optional[Path] = None) -> Path:
    return (env or env_dir()) / "bin" / "python"


def _wanted_stamp() -> str:
    payload = json.dumps({"v": SETUP_VERSION, "torch": TORCH_REQUIREMENT, "reqs": REQUIREMENTS,
                          "python": sys.version_info[:2]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def is_ready(env: Optional[Path] = None) -> bool:
    env = env or env_dir()
    stamp = env / STAMP
    return env_python(env).is_file() and stamp.is_file() and stamp.read_text().strip() == _wanted_stamp()




def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"rlpc: {msg}", file=sys.stderr, flush=True)


def _pip(python: Path, args: list[str], log: Path) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        raise PeerEnvError(f"pip install {' '.join(args)} failed (exit {proc.returncode}) in the peer environment "
                           f"{log.parent}; last lines of {log}:\n{tail}\nFix the cause (package index access, disk) "
                           f"and run `python -m benchmarks.peer_env` again, or delete {log.parent} to start over")


def ensure_env(*, quiet: bool = False) -> Path:
    """Build the peer environment if needed and return its folder (a few minutes the first time, then instant)."""
    env = env_dir()
    if is_ready(env):
        return env
    with file_lock(env.parent / f".{ENV_NAME}.lock"):
        if is_ready(env):  # another process built it while we waited
            return env
        start = time.perf_counter()
        if env.exists():  # a half-built or outdated environment: start clean, so no stale package survives
            shutil.rmtree(env)
        _say(f"building the peer environment for llmlingua in {env} (once, a few minutes; log: {env / 'install.log'})",
             quiet)
        proc = subprocess.run([sys.executable, "-m", "venv", str(env)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise PeerEnvError(f"`{sys.executable} -m venv {env}` failed: {proc.stderr.strip()[-800:]}; install the "
                               "venv module (Debian: apt-get install python3-venv) and try again")
        log = env / "install.log"
        python = env_python(env)
        # torch first, pinned: later requirements then find it satisfied and never pull a CUDA build.
        _pip(python, [TORCH_REQUIREMENT], log)
        _pip(python, [*REQUIREMENTS], log)
        tiktoken_cache(env)  # fail now, not in the worker, if the file llmlingua needs offline is missing
        (env / STAMP).write_text(_wanted_stamp() + "\n")
        _say(f"peer environment ready in {time.perf_counter() - start:.0f} s", quiet)
    return env


def site_packages(env: Optional[Path] = None) -> Path:
    env = env or env_dir()
    found = sorted(env.glob("lib/python3*/site-packages"))
    if not found:
        raise PeerEnvError(f"no site-packages under {env}; delete {env} and run `python -m benchmarks.peer_env`")
    return found[0]


def tiktoken_cache(env: Optional[Path] = None) -> Path:
    """llama-index-core's copy of tiktoken's cl100k file: ``TIKTOKEN_CACHE_DIR`` for llmlingua offline."""
    folder = site_packages(env) / "llama_index" / "core" / "_static" / "tiktoken_cache"
    if not folder.is_dir() or not any(folder.iterdir()):
        raise PeerEnvError(f"{folder} is missing or empty: llama-index-core should ship tiktoken's cl100k file "
                           f"there; delete {env or env_dir()} and build the environment again")
    return folder


def worker_env(threads: int, env: Optional[Path] = None) -> dict[str, str]:
    """Process environment for the worker: offline, tiktoken pointed at the shipped file, thread counts set."""
    out = dict(os.environ)
    out.pop("PYTHONPATH", None)  # the worker must see only its own environment's packages
    out.update({
        "TIKTOKEN_CACHE_DIR": str(tiktoken_cache(env)),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    })
    return out


#: The scorers LLMLingua peers can run with: the 135M is fast; the 0.5B is the fairer (a 135M scorer cripples them).
SCORERS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")


def scorer_folder(alias: str = "smollm2-135m-instruct") -> Path:
    """An embedded causal LM's transformers folder, readable by transformers 4 (generic fast tokenizer class)."""
    from rlpc_core.models import pull

    if alias not in SCORERS:
        raise ValueError(f"scorer {alias!r} is not one of {', '.join(SCORERS)}")
    folder = pull(alias, quiet=True, format="transformers")
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("tokenizer_class") != "PreTrainedTokenizerFast":
        # rlpc_core.models writes this at conversion; a folder converted by an older version may lack it.
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return folder


def smollm2_folder() -> Path:
    """The embedded SmolLM2 folder, readable by transformers 4."""
    return scorer_folder("smollm2-135m-instruct")


def bert_arch_folder(env: Optional[Path] = None, *, quiet: bool = False) -> Path:
    """A randomly initialised BERT of bert-base-multilingual-cased's shape, for LLMLingua-2 latency only.

    Built once, inside the peer environment (so transformers 4 writes it), under a folder whose name contains
    ``bert-base-multilingual-cased`` as LLMLingua-2 requires. mBERT's own vocabulary cannot be had offline: the
    tokenizer is the WordPiece vocabulary shipped with the embedded all-MiniLM-L6-v2 (bert-base-uncased's, 30,522
    entries), which splits English into about as many pieces. The embedding matrix keeps mBERT's 119,547 rows, so
    memory matches too. Its outputs are noise: quality figures of this peer mean nothing, only its cost.
    """
    env = env or ensure_env(quiet=quiet)
    final = cache_dir() / "envs" / "models" / BERT_ARCH_FOLDER
    if (final / "config.json").is_file() and (final / "vocab.txt").is_file():
        return final
    from rlpc_core.models import pull

    vocab = pull("all-minilm-l6-v2", quiet=True) / "vocab.txt"
    if not vocab.is_file():
        raise PeerEnvError(f"{vocab} not found: the embedded all-MiniLM-L6-v2 should ship a WordPiece vocab.txt")
    script = (
        "import json, sys, torch\n"
        "from transformers import BertConfig, BertForTokenClassification, BertTokenizerFast\n"
        "out, vocab, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "torch.manual_seed(0)\n"
        "model = BertForTokenClassification(BertConfig(**cfg)).eval()\n"
        "model.save_pretrained(out, safe_serialization=True)\n"
        "BertTokenizerFast(vocab_file=vocab, do_lower_case=True, model_max_length=512).save_pretrained(out)\n"
    )

    def build(tmp: Path) -> None:
        proc = subprocess.run([str(env_python(env)), "-c", script, str(tmp), str(vocab), json.dumps(BERT_MULTILINGUAL_CASED)],
                              capture_output=True, text=True, env=worker_env(1, env))
        if proc.returncode != 0:
            raise PeerEnvError(f"building the random BERT for llmlingua2-arch failed: {proc.stderr.strip()[-1500:]}")

    _say(f"writing a randomly initialised bert-base-multilingual-cased-shaped model to {final} (once)", quiet)
    with file_lock(final.parent / f".{BERT_ARCH_FOLDER}.lock"):
        if not (final / "config.json").is_file():
            build_atomically(final, build)
    return final


def main(argv: Optional[list[str]] = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.peer_env", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    env = ensure_env(quiet=args.quiet)
    print(f"environment: {env} ({env_python(env)})")
    print(f"TIKTOKEN_CACHE_DIR: {tiktoken_cache(env)}")
    print(f"llmlingua scorer: {smollm2_folder()}")
    print(f"llmlingua2-arch model: {bert_arch_folder(env, quiet=args.quiet)}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
