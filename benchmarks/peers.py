"""The published peers the benchmarks run beside rlpc's own policies, on the same rows at the same rate.

Research code: it lives in the repository, not in the wheel, and plugs into the library's harness
(:func:`register`, which ``python -m benchmarks.evaluate`` calls); the library never imports it. The baselines
``random`` and ``truncate`` are the library's own (:mod:`training.baselines`).

* ``selective-context``: Selective-Context-style self-information (Li et al. 2023): each token's ``-log p`` under a
  small causal LM (the embedded SmolLM2 by default), summed over the tokens of each whitespace word; the most
  informative words are kept. Query-agnostic, as the original. A policy registered with
  :func:`rlpc_core.register_policy`, so it goes through the same :class:`~rlpc_core.Compressor` machinery as the
  graph policy (same tokenizer, budget and guarantees), selecting plain words by score (``words_only = True``).

Peers that need other library versions run in their own environment (:mod:`benchmarks.peer_env`) through a worker
process (:mod:`benchmarks.peer_worker`) that times each compression itself:

* ``llmlingua``: LLMLingua-1 (question-agnostic), with a local scorer (``scorer``: the embedded SmolLM2-135M or
  Qwen2.5-Coder-0.5B);
* ``longllmlingua``: LongLLMLingua (question-aware ranking, dynamic rates, reordering), same scorers;
* ``llmlingua2-arch``: LLMLingua-2's pipeline with a randomly initialised model of its smallest architecture:
  latency and memory only, its quality figures are not meaningful.
"""

from __future__ import annotations

import json
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from rlpc_core import register_policy
from rlpc_core.policies import WordScores
from training.evaluate import ExternalMethod, register_external

#: Peers whose output means nothing for quality (only their cost is real).
NOT_MEANINGFUL = frozenset({"llmlingua2-arch"})
#: Peers that run in their own environment, through the worker, and what the report calls them.
ENV_PEERS = {"llmlingua": "LLMLingua-1", "longllmlingua": "LongLLMLingua",
             "llmlingua2-arch": "quality not meaningful: randomly initialised weights"}
IN_PROCESS_PEERS = ("selective-context",)
WORKER = Path(__file__).resolve().with_name("peer_worker.py")


class SelectiveContextPolicy:
    """Self-information of each word under a small causal LM; higher information is kept.

    Per token ``-log p(token | preceding text)``, summed over the tokens of each whitespace word (tokens are
    mapped to words by character offsets, the way :mod:`rlpc_core.tokens` does: a token belongs to the word
    holding its last character). The text is scored in windows of the model's context (capped at ``max_window``
    tokens, which bounds memory on CPU); each window after the first carries a quarter of a window of preceding
    tokens as context, so no token is scored blind. The first token is conditioned on the tokenizer's
    document-start token.
    """

    name = "selective-context"
    words_only = True

    def __init__(self, config: Any = None, *, model: str = "smollm2-135m-instruct", max_window: int = 2048,
                 dtype: str = "float32", **_: Any) -> None:
        self.model_spec = model
        self.max_window = int(max_window)
        self.dtype = dtype

    def _load(self) -> tuple[Any, Any]:
        from rlpc_core.models import load_causal_lm

        return load_causal_lm(self.model_spec, dtype=self.dtype)

    def token_information(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``(token_end_offsets, self_information)`` of ``text``'s tokens, in nats."""
        import torch

        model, tok = self._load()
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        ids = list(enc["input_ids"])
        ends = np.asarray([e for _, e in enc["offset_mapping"]], dtype=np.int64)
        if not ids:
            return ends, np.zeros(0)
        start_id = _start_token_id(tok)
        seq = ([start_id] if start_id is not None else []) + ids
        shift = 1 if start_id is not None else 0  # seq[i + shift] == ids[i]
        context = int(getattr(model.config, "max_position_embeddings", 0) or self.max_window)
        window = max(8, min(context, self.max_window))
        overlap = window // 4
        info = np.zeros(len(ids))
        head = model.get_output_embeddings()
        base = getattr(model, "base_model", None)
        pos = 0 if shift else 1  # ids[pos] is the first token to score (without a start token, ids[0] cannot be)
        with torch.inference_mode():
            while pos < len(ids):
                a = max(0, pos + shift - overlap) if pos else 0  # window start in seq
                n_new = min(len(ids) - pos, window - (pos + shift - a))
                chunk = torch.tensor([seq[a : pos + shift + n_new]], dtype=torch.long, device=model.device)
                if base is not None and head is not None and base is not model:
                    hidden = base(input_ids=chunk).last_hidden_state[0]
                    first = pos + shift - 1 - a  # hidden index predicting ids[pos]
                    for s in range(0, n_new, 256):  # the vocabulary projection in slices: bounded memory
                        e = min(n_new, s + 256)
                        logits = head(hidden[first + s : first + e]).float()
                        target = torch.tensor(ids[pos + s : pos + e], device=logits.device)
                        info[pos + s : pos + e] = torch.nn.functional.cross_entropy(
                            logits, target, reduction="none").cpu().numpy()
                else:
                    logits = model(input_ids=chunk).logits[0].float()
                    first = pos + shift - 1 - a
                    target = torch.tensor(ids[pos : pos + n_new], device=logits.device)
                    info[pos : pos + n_new] = torch.nn.functional.cross_entropy(
                        logits[first : first + n_new], target, reduction="none").cpu().numpy()
                pos += n_new
        if not shift and len(ids) > 1:
            info[0] = info[1:].max()  # no context for the very first token: keep it as surprising as the most
        return ends, info

    def score(self, words: Sequence[str], *, query: Optional[str] = None) -> WordScores:
        n = len(words)
        if n == 0:
            return WordScores(scores=np.zeros(0), protected=np.zeros(0, dtype=bool))
        text = " ".join(words)
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=n)
        starts = np.concatenate([[0], np.cumsum(lengths[:-1] + 1)])
        ends, info = self.token_information(text)
        owner = np.clip(np.searchsorted(starts, ends - 1, side="right") - 1, 0, n - 1)
        scores = np.bincount(owner, weights=info, minlength=n)
        return WordScores(scores=scores, protected=np.zeros(n, dtype=bool))


def _start_token_id(tok: Any) -> Optional[int]:
    """A document-start token to condition the first real token on (``<|endoftext|>``, else BOS, else EOS)."""
    vocab = tok.get_vocab()
    for name in ("<|endoftext|>", "<s>", "<|begin_of_text|>"):
        if name in vocab:
            return int(vocab[name])
    for tid in (tok.bos_token_id, tok.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


# ---------------------------------------------------------------- peers in their own environment

@dataclass
class WorkerRun:
    """What a worker run returned: per-request outputs and the worker's own figures."""

    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] = field(default_factory=dict)

    @property
    def peak_mb(self) -> Optional[float]:
        """Growth of the worker's resident memory from its start to its peak (imports and model included)."""
        peak = self.done.get("max_rss_mb")
        return None if peak is None else float(peak) - float(self.ready.get("rss_start_mb", 0.0))


def run_env_peer(method: str, requests: Sequence[dict[str, Any]], *, threads: int = 1,
                 log_path: Optional[Path] = None, progress: Optional[Callable[[dict[str, Any]], None]] = None,
                 quiet: bool = False, scorer: str = "smollm2-135m-instruct") -> WorkerRun:
    """Compress ``requests`` ({id, text, question, rate[, contexts]}) with an LLMLingua peer in its own environment.

    ``progress`` is called with each output as it arrives (so a caller can store it at once).

    Builds the environment on first use. The worker loads its model once; the seconds it reports are measured
    inside it around each compression call, so neither its start-up nor model loading is counted.
    """
    from benchmarks import peer_env

    if method not in ENV_PEERS:
        raise ValueError(f"{method!r} is not an environment peer: use one of {', '.join(ENV_PEERS)}")
    env = peer_env.ensure_env(quiet=quiet)
    model = (peer_env.bert_arch_folder(env, quiet=quiet) if method == "llmlingua2-arch"
             else peer_env.scorer_folder(scorer))
    cmd = [str(peer_env.env_python(env)), "-u", str(WORKER), "--method", method, "--model", str(model),
           "--threads", str(threads)]
    log_path = log_path or (env / f"worker-{method}.log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run = WorkerRun()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                encoding="utf-8", env=peer_env.worker_env(threads, env))

        def feed() -> None:
            try:
                for req in requests:
                    proc.stdin.write(json.dumps(req, ensure_ascii=False) + "\n")
                proc.stdin.close()
            except BrokenPipeError:  # the worker died; its exit status and log say why
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        for line in proc.stdout:
            msg = json.loads(line)
            if msg.get("ready"):
                run.ready = msg
            elif msg.get("done"):
                run.done = msg
            else:
                run.outputs[str(msg["id"])] = msg
                if progress:
                    progress(msg)
        rc = proc.wait()
        writer.join(timeout=5)
    if rc != 0 or not run.done:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"the {method} worker failed (exit {rc}); last lines of {log_path}:\n{tail}")
    return run


def _compress_external(method: str) -> Any:
    def compress(requests: Sequence[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        run = run_env_peer(method, requests, **kw)
        return {"peak_mb": run.peak_mb, "worker_max_rss_mb": run.done.get("max_rss_mb"),
                "load_seconds": run.ready.get("load_seconds"), "versions": run.ready.get("versions"),
                "threads": run.ready.get("threads")}
    return compress


def _prepare(quiet: bool) -> None:
    from benchmarks import peer_env

    peer_env.ensure_env(quiet=quiet)


def register(*, selective_context_model: str = "smollm2-135m-instruct") -> list[str]:
    """Register every peer with the harness (and Selective-Context with rlpc's policy registry)."""
    register_policy("selective-context",
                    lambda config, **kw: SelectiveContextPolicy(config, model=selective_context_model))
    for name, note in ENV_PEERS.items():
        register_external(ExternalMethod(name, _compress_external(name), prepare=_prepare, note=note,
                                         meaningful=name not in NOT_MEANINGFUL))
    return [*IN_PROCESS_PEERS, *ENV_PEERS]


__all__ = ["ENV_PEERS", "IN_PROCESS_PEERS", "NOT_MEANINGFUL", "SelectiveContextPolicy", "WorkerRun", "register",
           "run_env_peer"]
