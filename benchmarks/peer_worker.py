"""Compress with LLMLingua inside the peers' own environment (stdlib + llmlingua only; never imports rlpc).

Started by the benchmark (:mod:`benchmarks.peers`) with the peer environment's Python::

    python peer_worker.py --method llmlingua --model /path/to/smollm2 --threads 2 < requests.jsonl

Protocol, one JSON object per line:

* out, once, after the model is loaded and warmed up: ``{"ready": true, "load_seconds", "rss_start_mb",
  "rss_mb", "versions"}``;
* in, per request: ``{"id", "text", "question", "rate"}`` and optionally ``"contexts"``: the text's units (paragraphs,
  demonstrations) as a list, which LLMLingua's budget controller ranks and drops as wholes before cutting tokens
  (its recommended use for several documents or demonstrations); the output is always the compressed text alone;
* out, per request: ``{"id", "text", "seconds", "max_rss_mb"}`` (or ``{"id", "error"}``); ``seconds`` is measured
  here around the compression call alone, so neither this environment's start-up nor model loading is counted;
* out, at the end of input: ``{"done": true, "max_rss_mb"}``.

Methods:

* ``llmlingua``: LLMLingua-1 (token-level iterative compression by a small causal LM's perplexity) with the
  given local model as its scorer. It is question-agnostic by design (the question would only be appended after
  the context), so only the context is passed and compressed, at ``rate`` of its tokens. Its window
  (``iterative_size``) is a quarter of the prompt, at most its default 200: with 200, prompts shorter than ~200
  tokens come out almost untouched (measured: SQuAD passage at rate 0.5 -> 0.99, GSM8K question -> 1.0).
* ``longllmlingua``: LongLLMLingua, question-aware: documents ranked by how much each raises the question's
  likelihood, a dynamic per-document rate, reordering by relevance, and question-conditioned token compression,
  with the settings its authors recommend for QA (``rank_method="longllmlingua"``,
  ``condition_in_question="after_condition"``, ``condition_compare=True``, ``reorder_context="sort"``,
  ``dynamic_context_compression_ratio=0.3``, ``context_budget="+100"``). The budget is ``rate`` of the context's
  tokens (``target_token``), the question is not appended to the output (it is asked separately, uncompressed);
* ``llmlingua2-arch``: LLMLingua-2's pipeline (token classification over 512-token chunks) with whatever model
  folder is given, here a randomly initialised one of its smallest architecture: its cost is real, its output
  is noise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time


def _rss_mb() -> float:
    """Current resident memory in MB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return _max_rss_mb()


def _max_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


WARM_UP = ("The quick brown fox jumps over the lazy dog near the river bank. " * 8).strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="LLMLingua worker for the rlpc benchmark")
    parser.add_argument("--method", required=True, choices=["llmlingua", "longllmlingua", "llmlingua2-arch"])
    parser.add_argument("--model", required=True, help="local model folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterative-size", default="auto",
                        help="LLMLingua-1's window in tokens; 'auto' = min(200, max(16, tokens // 4))")
    args = parser.parse_args(argv)

    rss_start = _rss_mb()
    start = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import transformers
    from llmlingua import PromptCompressor

    transformers.logging.set_verbosity_error()
    def window(n: int) -> int:
        # Its default window (200) leaves any prompt shorter than ~200 tokens almost untouched (the window
        # arithmetic keeps all but the last window's overflow), so short prompts get a window of a quarter of
        # their length: measured here, that lands near the requested rate; long prompts keep 200.
        return min(200, max(16, n // 4)) if args.iterative_size == "auto" else int(args.iterative_size)

    if args.method in ("llmlingua", "longllmlingua"):
        compressor = PromptCompressor(model_name=args.model, device_map="cpu",
                                      model_config={"trust_remote_code": False})

        def compress(text: str, question: str, rate: float, contexts: list | None = None) -> str:
            contexts = contexts or [text]
            n = sum(compressor.get_token_length(c, add_special_tokens=False) for c in contexts)
            if args.method == "llmlingua" or not question:
                # question="": LLMLingua-1 conditions on nothing after the context, and a question passed here
                # would only enlarge the budget and be appended to the output.
                out = compressor.compress_prompt(contexts, instruction="", question="", rate=rate,
                                                 iterative_size=window(n))
                return out["compressed_prompt"]
            out = compressor.compress_prompt(
                contexts, instruction="", question=question, target_token=max(1, round(rate * n)),
                iterative_size=window(n), rank_method="longllmlingua", condition_in_question="after_condition",
                condition_compare=True, reorder_context="sort", dynamic_context_compression_ratio=0.3,
                context_budget="+100", concate_question=False)
            return out["compressed_prompt"]
    else:
        compressor = PromptCompressor(model_name=args.model, device_map="cpu", use_llmlingua2=True,
                                      model_config={"trust_remote_code": False})

        def compress(text: str, question: str, rate: float, contexts: list | None = None) -> str:
            # force_tokens as in LLMLingua-2's README example
            out = compressor.compress_prompt([text], rate=rate, force_tokens=["\n", "?"])
            return out["compressed_prompt"]

    compress(WARM_UP, "", 0.5)  # first-call costs (lazy kernels, caches) stay out of every measured row
    import llmlingua

    _emit({"ready": True, "load_seconds": time.perf_counter() - start, "rss_start_mb": rss_start,
           "rss_mb": _rss_mb(), "threads": torch.get_num_threads(),
           "versions": {"llmlingua": getattr(llmlingua, "__version__", "?"), "transformers": transformers.__version__,
                        "torch": torch.__version__, "python": sys.version.split()[0]}})

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        try:
            t0 = time.perf_counter()
            text = compress(req["text"], req.get("question") or "", float(req["rate"]), req.get("contexts"))
            seconds = time.perf_counter() - t0
            _emit({"id": req["id"], "text": text, "seconds": seconds, "max_rss_mb": _max_rss_mb()})
        except Exception as err:  # one bad row must not lose the rest of the run
            _emit({"id": req.get("id"), "error": f"{type(err).__name__}: {err}"})
    _emit({"done": True, "max_rss_mb": _max_rss_mb()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
