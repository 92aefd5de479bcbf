"""Speed of the extractive policy against its peers, on the same inputs in the same run (a benchmark, not a test).

    python benchmarks/extractive_speed.py --out benchmarks/results/extractive_speed
    python benchmarks/extractive_speed.py --weights runs/minilm-grpo --threads 1,2 --lengths 1000,4000,64000

Inputs: QMSum test transcripts (``--data-dir``), joined and cut into prefixes of 1k ... 64k tokens (counted in
the compressor's tokenizer); each length is measured on ``--samples`` different slices, each slice ``--repeats``
times. Per thread count (``torch.set_num_threads``) and length:

* ``extractive`` (int8 and fp32 encoder): ``Compressor.compress`` end to end (graph features, word pieces,
  chunked forward, selection, exact token count), and ``bare forward``: the same encoder's forward over the same
  chunks with the same batching, nothing else; the ratio of the two is the post-processing overhead;
* ``graph``: the training-free policy;
* peers in their own environment at ``--peer-lengths`` (LLMLingua-1 with SmolLM2 as its scorer; LLMLingua-2's
  pipeline with a randomly initialised model of its smallest architecture: its cost is real), timed inside their
  worker process on the same slices;
* peak memory: growth of resident memory during each in-process method (model load included).

Quality of int8 against fp32 (no loss allowed): answer-span survival on held-out SQuAD and NQ rows at rates 0.33
and 0.5, and the share of words on which the two keep masks agree.

Writes ``OUT/speed.json``, ``OUT/speed.md`` and ``OUT/scaling.png``. Absolute times drift on shared machines:
read the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.evaluate import PeakRSS  # noqa: E402


def transcript_slices(data_dir: Optional[str], counter: Any, lengths: Sequence[int], samples: int) -> dict[int, list[str]]:
    """``samples`` texts of about ``n`` tokens for each length, cut from different places of the joined transcripts."""
    from rlpc_core.words import split_words
    from training.data import load

    meetings = list(dict.fromkeys(e.text for e in load("qmsum", data_dir=data_dir, seed=0)))
    text = "\n".join(meetings)
    words = split_words(text)
    cum = np.concatenate([[0], np.cumsum(counter.word_costs(words))])
    total = int(cum[-1])
    out: dict[int, list[str]] = {}
    for n in lengths:
        if n > total:
            raise SystemExit(f"--lengths {n} exceeds the {total} tokens of the QMSum transcripts")
        starts = np.linspace(0, total - n, num=samples).astype(int) if samples > 1 else [0]
        texts = []
        for s in starts:
            lo = int(np.searchsorted(cum, s))
            hi = max(lo + 1, int(np.searchsorted(cum, s + n)))
            texts.append(text[words.starts[lo]:words.ends[hi - 1]])
        out[n] = texts
    return out


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bare_forward(policy: Any, text: str):
    """A closure running only the encoder over ``text``'s chunks, batched as the policy batches them."""
    import torch

    from rlpc_core.policies.extractive import encode
    from rlpc_core.words import split_words

    model, tok, info = policy._load()
    words = split_words(text).tokens
    enc = encode(tok, words, None, max_length=min(policy.config.max_length, info.max_length),
                 query_max_tokens=policy.config.query_max_tokens)
    bs = policy.config.batch_size
    batches = []
    for lo in range(0, enc.input_ids.shape[0], bs):
        mask = enc.attention_mask[lo:lo + bs]
        w = int(mask.sum(axis=1).max())
        batches.append((torch.from_numpy(enc.input_ids[lo:lo + bs, :w]), torch.from_numpy(enc.token_type_ids[lo:lo + bs, :w]),
                        torch.from_numpy(mask[:, :w])))

    def run() -> None:
        with torch.inference_mode():
            for ids, types, m in batches:
                model.encoder(input_ids=ids, token_type_ids=types, attention_mask=m)

    return run


def quality_int8_vs_fp32(compressors: dict[str, Any], data_dir: Optional[str], rows: int) -> dict[str, Any]:
    from rlpc_core.rewards import answer_survives
    from training.data import load

    out: dict[str, Any] = {}
    for ds in ("squad", "nq"):
        examples = load(ds, split="heldout", limit=rows, seed=0, data_dir=data_dir)
        for rate in (0.33, 0.5):
            res = {name: [c.compress(e.text, rate=rate, query=e.question) for e in examples]
                   for name, c in compressors.items()}
            surv = {name: float(np.mean([answer_survives(r.text, e.answers) for r, e in zip(rs, examples)]))
                    for name, rs in res.items()}
            agree = float(np.mean([np.mean(np.asarray(a.kept) == np.asarray(b.kept))
                                   for a, b in zip(res["int8"], res["fp32"])]))
            out[f"{ds}@{rate}"] = {"rows": len(examples), "answer_survival": surv, "mask_agreement": agree}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rlpc_core import Compressor
    from benchmarks.peers import run_env_peer

    kwargs = {"extractive": {"weights": str(Path(args.weights).resolve())}} if args.weights else {}
    extractive = {q: Compressor(policy="extractive", **{"extractive": {**kwargs.get("extractive", {}), "quantize": q}})
                  for q in ("int8", "none")}
    graph = Compressor(policy="graph")
    counter = graph.counter
    lengths = [int(x) for x in args.lengths.split(",")]
    slices = transcript_slices(args.data_dir, counter, lengths, args.samples)
    peak: dict[str, Optional[float]] = {}
    for name, c in (("extractive-int8", extractive["int8"]), ("extractive-fp32", extractive["none"]), ("graph", graph)):
        with PeakRSS() as mem:
            c.compress(slices[lengths[0]][0], rate=args.rate)  # loads the model: counted in the peak
            c.compress(slices[lengths[-1]][0], rate=args.rate)
        peak[name] = mem.peak_mb
    rows: list[dict[str, Any]] = []
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for n in lengths:
            for i, text in enumerate(slices[n]):
                tokens = counter.count(text)
                reps = args.repeats if n <= 16000 else max(1, args.repeats // 2)
                for q, label in (("int8", "extractive-int8"), ("none", "extractive-fp32")):
                    c = extractive[q]
                    compress_s = _time(lambda: c.compress(text, rate=args.rate), reps)
                    bare_s = _time(bare_forward(c.policy, text), reps)
                    rows.append({"method": label, "threads": threads, "length": n, "tokens": tokens, "slice": i,
                                 "seconds": statistics.median(compress_s), "bare_seconds": statistics.median(bare_s)})
                g = _time(lambda: graph.compress(text, rate=args.rate), reps)
                rows.append({"method": "graph", "threads": threads, "length": n, "tokens": tokens, "slice": i,
                             "seconds": statistics.median(g)})
                print(f"threads {threads} length {n} slice {i}: int8 {rows[-3]['seconds']:.3f} s "
                      f"(bare {rows[-3]['bare_seconds']:.3f}), fp32 {rows[-2]['seconds']:.3f} s, graph {g[0]:.3f} s",
                      flush=True)
        peer_lengths = [int(x) for x in args.peer_lengths.split(",")] if args.peers else []
        for peer in [p for p in args.peers.split(",") if p]:
            requests = [{"id": f"{n}-{i}", "text": t, "question": None, "rate": args.rate}
                        for n in peer_lengths for i, t in enumerate(slices[n])]
            result = run_env_peer(peer, requests, threads=threads, quiet=True,
                                  log_path=Path(args.out) / f"peer-{peer}-{threads}.log")
            peak[peer] = result.peak_mb
            for req in requests:
                got = result.outputs.get(req["id"], {})
                if "seconds" not in got:
                    raise SystemExit(f"{peer} failed on {req['id']}: {got.get('error')}")
                n, i = (int(x) for x in req["id"].split("-"))
                rows.append({"method": peer, "threads": threads, "length": n, "tokens": counter.count(req["text"]),
                             "slice": i, "seconds": float(got["seconds"]),
                             "versions": result.ready.get("versions")})
            print(f"threads {threads}: {peer} done", flush=True)
    quality = quality_int8_vs_fp32({"int8": extractive["int8"], "fp32": extractive["none"]}, args.data_dir,
                                   args.quality_rows)
    return {"config": vars(args), "rows": rows, "peak_mb": peak, "quality_int8_vs_fp32": quality,
            "weights": str(extractive["int8"].policy.folder),
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """ms per 1k tokens (p50/p95 over slices) per (method, threads, length); ratios against peers; scaling."""
    rows = result["rows"]
    keys = sorted({(r["method"], r["threads"], r["length"]) for r in rows})
    table: dict[str, Any] = {}
    for m, t, n in keys:
        sel = [r for r in rows if (r["method"], r["threads"], r["length"]) == (m, t, n)]
        per1k = [1000 * r["seconds"] * 1000 / r["tokens"] for r in sel]
        entry = {"ms_per_1k_p50": float(np.percentile(per1k, 50)), "ms_per_1k_p95": float(np.percentile(per1k, 95)),
                 "seconds_p50": float(np.median([r["seconds"] for r in sel])), "n": len(sel)}
        if "bare_seconds" in sel[0]:
            entry["bare_ms_per_1k_p50"] = float(np.percentile([1e6 * r["bare_seconds"] / r["tokens"] for r in sel], 50))
            entry["overhead_ratio"] = float(np.median([r["seconds"] / r["bare_seconds"] for r in sel]))
        table[f"{m}|{t}|{n}"] = entry
    speedups = {}
    for key, entry in table.items():
        m, t, n = key.split("|")
        if not m.startswith("extractive"):
            continue
        for peer in ("llmlingua", "llmlingua2-arch"):  # the graph is faster and has its own rows above
            other = table.get(f"{peer}|{t}|{n}")
            if other:
                speedups[f"{m} vs {peer} @ {t} threads, {n} tokens"] = other["ms_per_1k_p50"] / entry["ms_per_1k_p50"]
    scaling = {}
    for m in sorted({r["method"] for r in rows}):
        for t in sorted({r["threads"] for r in rows}):
            sel = [r for r in rows if r["method"] == m and r["threads"] == t]
            if len({r["length"] for r in sel}) >= 3:
                x, y = np.log([r["tokens"] for r in sel]), np.log([r["seconds"] for r in sel])
                scaling[f"{m}|{t}"] = float(np.polyfit(x, y, 1)[0])
    return {"table": table, "speedups": speedups, "scaling_exponent": scaling}


def _shown(path: str) -> str:
    """A weights path as a reader of the repository sees it (not the machine's checkout folder)."""
    return path[path.index("rlpc_core/"):] if "rlpc_core/" in path else path


def markdown(result: dict[str, Any], summary: dict[str, Any], command: str) -> str:
    table = summary["table"]
    lines = ["# Extractive compressor speed", "", f"Command: `{command}`", "",
             f"Weights: `{_shown(result['weights'])}`; QMSum transcript slices; rate {result['config']['rate']}; "
             f"{result['config']['samples']} slices per length; {result['versions']['platform']}, torch "
             f"{result['versions']['torch']}. Milliseconds of `compress()` per 1,000 input tokens, median over slices "
             "(p95 after the slash); `bare` is the encoder's forward alone over the same chunks; overhead = "
             "compress / bare.", "",
             "| method | threads | tokens | ms / 1k tokens p50 / p95 | bare forward ms / 1k | overhead |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, e in table.items():
        m, t, n = key.split("|")
        bare = f"{e['bare_ms_per_1k_p50']:.0f}" if "bare_ms_per_1k_p50" in e else "–"
        over = f"{e['overhead_ratio']:.2f}x" if "overhead_ratio" in e else "–"
        lines.append(f"| `{m}` | {t} | {int(n):,} | {e['ms_per_1k_p50']:,.0f} / {e['ms_per_1k_p95']:,.0f} | {bare} | {over} |")
    lines += ["", "## Speed-ups (peer ms per 1k tokens / ours, same slices, same run)", "",
              "| comparison | speed-up |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f}x |" for k, v in summary["speedups"].items()]
    lines += ["", "## Scaling", "", "Exponent b of a log-log fit seconds ∝ tokens^b over every slice (1 = linear).", "",
              "| method | threads | b |", "|---|---:|---:|"]
    lines += [f"| `{k.split('|')[0]}` | {k.split('|')[1]} | {v:.2f} |" for k, v in summary["scaling_exponent"].items()]
    lines += ["", "## Peak memory (MB, growth during the method, model load included; peers: their worker)", "",
              "Measured in one process in this order, so the first method also carries the process's one-time costs "
              "(libraries, tokenizer, the base encoder's first load); the peers start from a fresh worker.", "",
              "| method | peak MB |", "|---|---:|"]
    lines += [f"| `{k}` | {v:,.0f} |" for k, v in result["peak_mb"].items() if v is not None]
    lines += ["", "## int8 against fp32 (held-out rows, answer-span survival)", "",
              "| rows | int8 | fp32 | keep-mask agreement |", "|---|---:|---:|---:|"]
    for k, q in result["quality_int8_vs_fp32"].items():
        lines.append(f"| {k} ({q['rows']}) | {q['answer_survival']['int8']:.3f} | {q['answer_survival']['fp32']:.3f} | "
                     f"{q['mask_agreement']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], summary: dict[str, Any], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    series: dict[str, list[tuple[int, float]]] = {}
    for key, e in summary["table"].items():
        m, t, n = key.split("|")
        series.setdefault(f"{m} ({t} thr)", []).append((int(n), e["seconds_p50"]))
        if "bare_ms_per_1k_p50" in e and m == "extractive-int8":
            series.setdefault(f"bare forward int8 ({t} thr)", []).append((int(n), e["bare_ms_per_1k_p50"] * int(n) / 1e6))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot(*zip(*pts), marker="o", linewidth=1.5, label=label, linestyle="--" if "bare" in label else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("input tokens")
    ax.set_ylabel("seconds per compression (median)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="extractive weights folder (default: the embedded ones)")
    p.add_argument("--data-dir", default=None, help="folder holding qmsum/, squad_v2_dev_subset/, nq_open_oracle/")
    p.add_argument("--lengths", default="1000,2000,4000,8000,16000,32000,64000")
    p.add_argument("--samples", type=int, default=5, help="slices per length")
    p.add_argument("--repeats", type=int, default=3, help="timings per slice (median kept)")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--peers", default="llmlingua,llmlingua2-arch", help="environment peers ('' for none)")
    p.add_argument("--peer-lengths", default="1000", help="lengths the (slow) peers are timed at")
    p.add_argument("--quality-rows", type=int, default=200)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "extractive_speed")
    p.add_argument("--render", action="store_true", help="re-render OUT/speed.md and scaling.png from OUT/speed.json")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render:
        result = json.loads((args.out / "speed.json").read_text(encoding="utf-8"))
        command = result.pop("command")
        result.pop("summary", None)
    else:
        result = run(args)
        command = "python benchmarks/extractive_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
    summary = summarise(result)
    payload = {**result, "summary": summary, "command": command}
    payload["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in payload["config"].items()}
    (args.out / "speed.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    (args.out / "speed.md").write_text(markdown(result, summary, command), encoding="utf-8")
    plot(result, summary, args.out / "scaling.png")
    print(f"wrote {args.out / 'speed.json'}, speed.md and scaling.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
