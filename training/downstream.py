"""Downstream accuracy: how much a capable reader LLM loses on the compressed prompt against the original.

The harness (:mod:`training.evaluate`, ``--reader SPEC``) hands every (method, rate, row) record here. The reader
answers the original prompt and each distinct compressed one with one fixed prompt per task
(:data:`rlpc_core.evaluator.TASKS`: the context or worked examples compressed, the question never), greedy, and
the answer is scored against the gold:

* qa: normalised exact match, token F1 and "answer contains gold" (the headline accuracy: a reader that answers
  "in Paris, France" for "Paris" read the context right);
* math and math-fewshot: the final number equals the gold;
* mc: the option letter equals the gold letter.

Per method and rate: accuracy with a bootstrap CI and, the headline, **accuracy lost**: the paired per-row
difference original minus compressed, with its CI (rows the compression broke, rows it fixed). End to end:
compression seconds plus the reader's prefill and decoding seconds against the uncompressed prompt's, and the
tokens billed. Replies come from the evaluator's cache where they exist, with the costs measured when they were
computed; llama.cpp's prefix cache makes rows that share a prefix (the same compressed few-shot examples) cheaper
to prefill, so the cold prefill is also given, from the run's own measured prefill throughput.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from training.rates import rate_key, rate_label

NONE = "none"
#: The reader task of each dataset task (summaries have no gold a reader's answer can be scored against).
READER_TASKS = {"qa": "qa", "math": "math", "math-fewshot": "math-fewshot", "mc": "mc", "prompt": "prompt"}
#: What "accuracy" is for each task, as stated in reports.
ACCURACY_MEANS = {"qa": "the reply contains a gold answer (normalised, whole words)",
                  "math": "the final number equals the gold", "math-fewshot": "the final number equals the gold",
                  "mc": "the option letter equals the gold",
                  "prompt": "the reply contains the reference (normalised, whole words)"}
COST_FIELDS = ("prompt_tokens", "completion_tokens", "reused_tokens", "prefill_seconds", "generation_seconds", "seconds")


def default_reader() -> Optional[str]:
    """The embedded 1.5B reader under llama.cpp where it is installed and pulled, else ``None``."""
    from rlpc_core.evaluator import DEFAULT_READER
    from rlpc_core.models import is_pulled

    if importlib.util.find_spec("llama_cpp") is None:
        return None
    return DEFAULT_READER if is_pulled(DEFAULT_READER.split(":", 1)[1], "gguf") else None


def score(task: str, reply: str, answer: Any, golds: Sequence[str]) -> dict[str, float]:
    """The reader's answer scored against the gold (:func:`rlpc_core.evaluator.score_answer`)."""
    from rlpc_core.evaluator import score_answer

    return score_answer(task, reply, answer, golds)


def _question(task: str, e: Any) -> Optional[str]:
    return e.question if task != "math" else None


def run_reader(records: list[dict[str, Any]], examples: Sequence[Any], *, spec: str, max_new_tokens: Mapping[str, int],
               tqdm: Any, chunk: int = 4, options: Optional[Mapping[str, Any]] = None,
               skip_methods: Sequence[str] = (), journal: Optional[Path] = None) -> dict[str, Any]:
    """Add the reader's answers, scores and costs to every record (original side included); return run info.

    ``journal``: a JSONL file beside the results that keeps every reply as it arrives and is read back first, so a
    run continued on another machine (its folder copied or committed) asks the reader only what is missing.
    """
    from rlpc_core.evaluator import TASKS, EvalCache, Evaluator

    task = READER_TASKS.get(examples[0].task)
    if task is None:
        return {"spec": spec, "skipped": f"task {examples[0].task!r} has no gold a reader's answer can be scored on"}
    n_new = int(max_new_tokens[task])
    cache = EvalCache.default(journal=journal) if journal is not None else True
    ev = Evaluator(spec, max_new_tokens=n_new, cache=cache, **dict(options or {}))
    by_id = {e.id: e for e in examples}
    scored = [r for r in records if r["method"] not in skip_methods]
    # Each distinct (text, question) once: originals and compressions together; identical texts (a few-shot
    # block every question shares) sort next to each other, so llama.cpp's prefix cache serves them.
    jobs: dict[tuple[str, Optional[str]], None] = {}
    for e in examples:
        jobs[(e.text, _question(task, e))] = None
    for r in scored:
        jobs[(r["text"], _question(task, by_id[r["id"]]))] = None
    keys = sorted(jobs, key=lambda k: (k[0], k[1] or ""))
    answers: dict[tuple[str, Optional[str]], Any] = {}
    t0 = time.perf_counter()
    computed = 0
    with tqdm(total=len(keys), desc=f"reader ({spec})", unit="prompt") as bar:
        for i in range(0, len(keys), chunk):
            part = keys[i : i + chunk]
            got = ev.answer(task, [k[0] for k in part], [k[1] for k in part] if task != "math" else None)
            answers.update(zip(part, got))
            computed += sum(not a.cached for a in got)
            bar.update(len(part))
    seconds = time.perf_counter() - t0

    def fields(a: Any, e: Any, suffix: str = "") -> dict[str, Any]:
        out = {f"reader_{k}{suffix}": v for k, v in score(task, a.text, a.answer, e.answers).items()}
        rep = a.reply
        for k in COST_FIELDS:
            out[f"reader_{k}{suffix}"] = getattr(rep, k, None)
        out[f"reader_finish{suffix}"] = getattr(rep, "finish_reason", None)
        return out

    for r in scored:
        e = by_id[r["id"]]
        q = _question(task, e)
        comp, orig = answers[(r["text"], q)], answers[(e.text, q)]
        r["reader_reply"] = comp.text
        r["reader_answer"] = comp.answer
        r.update(fields(comp, e))
        r.update(fields(orig, e, "_original"))
    replies = [a.reply for a in answers.values() if a.reply is not None]
    return {"spec": spec, "model_key": ev.model_key, "description": ev.description, "task": task,
            "prompt": TASKS[task].template, "stop": list(TASKS[task].stop), "max_new_tokens": n_new,
            "accuracy_means": ACCURACY_MEANS[task], "distinct_prompts": len(keys), "computed": computed,
            "cached": len(keys) - computed, "seconds": seconds,
            "prefill_tokens_per_second": prefill_throughput(replies)}


def prefill_throughput(replies: Sequence[Any], min_tokens: int = 64) -> Optional[float]:
    """Prompt tokens prefilled per second over replies that prefilled at least ``min_tokens`` themselves."""
    toks = secs = 0.0
    for rep in replies:
        if rep.prefill_seconds and rep.prompt_tokens is not None:
            fresh = rep.prompt_tokens - (rep.reused_tokens or 0)
            if fresh >= min_tokens:
                toks += fresh
                secs += rep.prefill_seconds
    return toks / secs if secs > 0 else None


# ---------------------------------------------------------------- aggregation

def _ci(values: Sequence[Optional[float]], seed: int, *, paired: bool = False) -> Optional[dict[str, Any]]:
    from training.stats import bootstrap_ci

    vals = [float(v) for v in values if v is not None]
    ci = bootstrap_ci(vals, seed)
    if ci is not None and paired:
        ci.update(worse=int(sum(v > 0 for v in vals)), better=int(sum(v < 0 for v in vals)))
    return ci


def _cold_prefill(r: Mapping[str, Any], suffix: str, throughput: Optional[float]) -> Optional[float]:
    prefill = r.get(f"reader_prefill_seconds{suffix}")
    if prefill is None:
        return None
    reused = r.get(f"reader_reused_tokens{suffix}") or 0
    return prefill + (reused / throughput if throughput else 0.0)


def reader_aggregate(rows: Sequence[Mapping[str, Any]], *, seed: int, throughput: Optional[float]) -> Optional[dict[str, Any]]:
    """Accuracy, accuracy lost against the original (paired), and end-to-end cost for one (method, rate)."""
    rows = [r for r in rows if r.get("reader_accuracy") is not None]
    if not rows:
        return None
    out: dict[str, Any] = {
        "n": len(rows),
        "accuracy": _ci([r["reader_accuracy"] for r in rows], seed),
        "accuracy_original": float(np.mean([r["reader_accuracy_original"] for r in rows])),
        # positive = the compressed prompt lost accuracy; worse/better = rows it broke / fixed
        "accuracy_lost": _ci([r["reader_accuracy_original"] - r["reader_accuracy"] for r in rows], seed, paired=True),
        # replies cut by the generation budget: a chain of thought that ran out is scored wrong whatever it read
        "ran_out_of_tokens": float(np.mean([r.get("reader_finish") == "length" for r in rows])),
        "ran_out_of_tokens_original": float(np.mean([r.get("reader_finish_original") == "length" for r in rows])),
    }
    if rows[0].get("reader_em") is not None:
        for k in ("em", "f1", "contains"):
            out[k] = _ci([r[f"reader_{k}"] for r in rows], seed)
            out[f"{k}_original"] = float(np.mean([r[f"reader_{k}_original"] for r in rows]))
            out[f"{k}_lost"] = _ci([r[f"reader_{k}_original"] - r[f"reader_{k}"] for r in rows], seed, paired=True)
    out["end_to_end"] = end_to_end(rows, seed=seed, throughput=throughput)
    return out


def _reader_seconds(r: Mapping[str, Any], suffix: str, throughput: Optional[float]) -> tuple[Optional[float], ...]:
    """``(total, prefill measured, prefill cold, decoding)`` of one reply; a server that does not split prefill from
    decoding gives its wall seconds as the total and ``None`` for the parts."""
    prefill, gen = r.get(f"reader_prefill_seconds{suffix}"), r.get(f"reader_generation_seconds{suffix}")
    if prefill is not None and gen is not None:
        cold = _cold_prefill(r, suffix, throughput)
        return cold + gen, prefill, cold, gen
    wall = r.get(f"reader_seconds{suffix}")
    return wall, None, None, None


def end_to_end(rows: Sequence[Mapping[str, Any]], *, seed: int, throughput: Optional[float]) -> dict[str, Any]:
    """Per-row seconds of compression + the reader's prefill + decoding, against the uncompressed prompt's."""
    comp, prefill, cold, gen, total, orig_total, saved = [], [], [], [], [], [], []
    for r in rows:
        c = (r.get("seconds") or 0.0) / max(1, int(r.get("shared_by") or 1))  # a shared compression is paid once
        t, p, pc, g = _reader_seconds(r, "", throughput)
        to = _reader_seconds(r, "_original", throughput)[0]
        if t is None or to is None:
            continue
        comp.append(c), total.append(c + t), orig_total.append(to), saved.append(to - (c + t))
        if p is not None:
            prefill.append(p), cold.append(pc), gen.append(g)
    tokens = {k: float(np.mean([r[f"reader_{k}"] for r in rows if r.get(f"reader_{k}") is not None] or [np.nan]))
              for k in ("prompt_tokens", "completion_tokens", "prompt_tokens_original", "completion_tokens_original")}
    billed = sum((r.get("reader_prompt_tokens") or 0) + (r.get("reader_completion_tokens") or 0) for r in rows)
    billed_orig = sum((r.get("reader_prompt_tokens_original") or 0) + (r.get("reader_completion_tokens_original") or 0)
                      for r in rows)
    out: dict[str, Any] = {"n": len(total), **tokens,
                           "billed_tokens_saved_share": (1 - billed / billed_orig) if billed_orig else None}
    if total:
        mean = lambda xs: float(np.mean(xs)) if xs else None  # noqa: E731
        out.update({"compression_s": mean(comp), "prefill_s": mean(prefill), "prefill_cold_s": mean(cold),
                    "generation_s": mean(gen), "total_s": mean(total), "original_total_s": mean(orig_total),
                    "speedup": float(np.mean(orig_total) / np.mean(total)) if np.mean(total) > 0 else None,
                    "saved_s": _ci(saved, seed)})
    return out


# ---------------------------------------------------------------- report

def _pct(stat: Optional[Mapping[str, Any]], signed: bool = False) -> str:
    if not stat or stat.get("mean") is None:
        return "—"
    f = "{:+.1f}" if signed else "{:.1f}"
    lo, hi = stat["ci"]
    return f"{f.format(100 * stat['mean'])} [{f.format(100 * lo)}, {f.format(100 * hi)}]"


def reader_table(metrics: Mapping[str, Any]) -> list[str]:
    """The headline table: accuracy and accuracy lost against the uncompressed prompt, per method and rate."""
    aggs = [a for a in metrics["aggregates"] if a.get("reader")]
    if not aggs:
        return []
    qa = any("em" in a["reader"] for a in aggs)
    head = ["method", "rate", "achieved ratio", "reader accuracy % [95% CI]", "accuracy lost, pts [95% CI]",
            "broke / fixed"]
    if qa:
        head += ["EM %", "F1 %", "EM lost", "F1 lost"]
    # where replies hit the generation budget, accuracy measures the budget as much as the prompt: say how often
    cut = any(a["reader"].get("ran_out_of_tokens") or a["reader"].get("ran_out_of_tokens_original") for a in aggs)
    if cut:
        head += ["ran out of new tokens %"]
    head += ["s per row (vs none)", "prompt tokens billed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for a in sorted(aggs, key=lambda a: (rate_key(a["rate"]), a["method"] != NONE, a["method"])):
        rd, e2e = a["reader"], a["reader"].get("end_to_end") or {}
        lost = rd["accuracy_lost"]
        cells = [f"`{a['method']}`", rate_label(a["rate"]), f"{a['ratio_mean']:.3f}", _pct(rd["accuracy"]),
                 "0 (reference)" if a["method"] == NONE else _pct(lost, signed=True),
                 "—" if a["method"] == NONE else f"{lost['worse']} / {lost['better']}"]
        if qa:
            cells += [f"{100 * rd['em']['mean']:.1f}", f"{100 * rd['f1']['mean']:.1f}",
                      "—" if a["method"] == NONE else f"{100 * rd['em_lost']['mean']:+.1f}",
                      "—" if a["method"] == NONE else f"{100 * rd['f1_lost']['mean']:+.1f}"]
        if cut:
            share = rd.get("ran_out_of_tokens_original" if a["method"] == NONE else "ran_out_of_tokens")
            cells.append("—" if share is None else f"{100 * share:.0f}")
        if e2e.get("total_s") is not None:
            cells.append(f"{e2e['total_s']:.2f} ({e2e['speedup']:.2f}x)")
        else:
            cells.append("—")
        cells.append(f"{e2e.get('prompt_tokens', float('nan')):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def end_to_end_table(metrics: Mapping[str, Any]) -> list[str]:
    aggs = [a for a in metrics["aggregates"] if (a.get("reader") or {}).get("end_to_end", {}).get("total_s") is not None]
    if not aggs:
        return []
    lines = ["| method | rate | compression s | reader prefill s (cached prefix / cold est.) | decoding s | total s | "
             "uncompressed total s | saved s per row [95% CI] | prompt + reply tokens billed, saved |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for a in sorted(aggs, key=lambda a: (rate_key(a["rate"]), a["method"] != NONE, a["method"])):
        e = a["reader"]["end_to_end"]
        saved = e.get("saved_s") or {}
        ci = saved.get("ci") or [None, None]
        share = e.get("billed_tokens_saved_share")
        split = (f"{e['prefill_s']:.2f} / {e['prefill_cold_s']:.2f} | {e['generation_s']:.2f}"
                 if e.get("prefill_s") is not None else "— | — (the server reports wall seconds only)")
        lines.append(f"| `{a['method']}` | {rate_label(a['rate'])} | {e['compression_s']:.3f} | {split} | {e['total_s']:.2f} | "
                     f"{e['original_total_s']:.2f} | {saved.get('mean', float('nan')):+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}] | "
                     f"{'—' if share is None else f'{100 * share:.1f}%'} |")
    return lines


def pays_for_itself(metrics: Mapping[str, Any]) -> list[str]:
    """Where compression plus the reader is faster than the reader on the uncompressed prompt, and where it is not
    (by the CI of the per-row seconds saved), as sentences for the report."""
    pays, costs, even = [], [], []
    for a in metrics["aggregates"]:
        e = (a.get("reader") or {}).get("end_to_end") or {}
        saved = e.get("saved_s")
        if a["method"] == NONE or not saved:
            continue
        label = f"`{a['method']}` at {rate_label(a['rate'])} ({saved['mean']:+.2f} s per row)"
        (pays if saved["ci"][0] > 0 else costs if saved["ci"][1] < 0 else even).append(label)
    out = []
    if pays:
        out.append("Pays for itself (seconds saved per row, CI above 0): " + ", ".join(pays) + ".")
    if costs:
        out.append("Costs more time than it saves (CI below 0): " + ", ".join(costs) + ".")
    if even:
        out.append("Within noise: " + ", ".join(even) + ".")
    return out + [""] if out else []


def reader_report(metrics: Mapping[str, Any]) -> list[str]:
    """The report's downstream section (empty without a reader)."""
    info = metrics.get("reader") or {}
    if not info.get("spec"):
        return []
    if info.get("skipped"):
        return ["## Downstream accuracy", "", f"Not measured: {info['skipped']}.", ""]
    lines = ["## Downstream accuracy: what a capable reader loses on the compressed prompt", "",
             f"Reader `{info['spec']}` ({info.get('description', '')}), greedy, at most {info['max_new_tokens']} new "
             f"tokens. **Accuracy** = {info['accuracy_means']}. **Accuracy lost** = per row, accuracy on the "
             "original prompt minus on the compressed one, mean with a 95% bootstrap CI (paired: the same rows, the "
             "same reader); *broke / fixed* = rows right on the original and wrong compressed / the reverse.", ""]
    lines += reader_table(metrics) + [""]
    e2e = end_to_end_table(metrics)
    verdict = pays_for_itself(metrics)
    if e2e:
        tput = info.get("prefill_tokens_per_second")
        lines += ["### End to end: compression + the reader, against the uncompressed prompt", "",
                  "Seconds per row on this machine: compression (a compression shared by several rows, like one "
                  "few-shot block, counted once per row's share), the reader's prefill and decoding. llama.cpp reuses "
                  "the KV cache of a prompt prefix the previous request shared; *cold* adds those reused tokens back at "
                  f"the run's measured prefill throughput ({tput:.0f} tokens/s) and is what *total* uses. "
                  "Compression pays for itself where *saved* is positive." if tput else
                  "Seconds per row on this machine.", ""] + e2e + [""] + verdict
    lines += ["The reader's prompt (`{text}`: the compressed part; `{question}`: never compressed):", "",
              "```text", info["prompt"], "```", ""]
    return lines


def plot_reader(metrics: Mapping[str, Any], out: Any) -> list[str]:
    """``accuracy_lost.png``: accuracy lost (with CIs) against the achieved ratio, one line per method."""
    aggs = [a for a in metrics["aggregates"] if a.get("reader") and a["method"] != NONE]
    if not aggs:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for m in dict.fromkeys(a["method"] for a in aggs):
        pts = sorted((a for a in aggs if a["method"] == m), key=lambda a: a["ratio_mean"])
        xs = [a["ratio_mean"] for a in pts]
        ys = [100 * a["reader"]["accuracy_lost"]["mean"] for a in pts]
        lo = [100 * (a["reader"]["accuracy_lost"]["mean"] - a["reader"]["accuracy_lost"]["ci"][0]) for a in pts]
        hi = [100 * (a["reader"]["accuracy_lost"]["ci"][1] - a["reader"]["accuracy_lost"]["mean"]) for a in pts]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=m)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("achieved ratio (compressed / original tokens)")
    ax.set_ylabel("accuracy lost vs uncompressed (points)")
    info = metrics.get("reader") or {}
    ax.set_title(f"{metrics['dataset']['name']}: reader {info.get('spec', '')}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_lost.png", dpi=110)
    plt.close(fig)
    return ["accuracy_lost.png"]


__all__ = ["ACCURACY_MEANS", "READER_TASKS", "default_reader", "end_to_end", "pays_for_itself", "plot_reader",
           "prefill_throughput",
           "reader_aggregate", "reader_report", "reader_table", "run_reader", "score"]
