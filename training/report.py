"""The Markdown report of one harness run: ``python -m training.evaluate`` writes ``report.md`` with
:func:`render_report`. (The benchmarks' README section is rendered from the same tables by
``benchmarks/report_readme.py``, outside the library.)
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from training.rates import rate_key, rate_label

NM = "n/m"
DASH = "—"


# ---------------------------------------------------------------- number formatting

def _num(x: Any, digits: int = 3) -> Optional[float]:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def fmt(x: Any, digits: int = 3, signed: bool = False) -> str:
    v = _num(x)
    if v is None:
        return DASH
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_ci(stat: Optional[Mapping[str, Any]], digits: int = 3, signed: bool = False) -> str:
    """``mean [lo, hi]`` from a ``{"mean", "ci"}`` dict."""
    if not stat or _num(stat.get("mean")) is None:
        return DASH
    ci = stat.get("ci") or [None, None]
    out = fmt(stat["mean"], digits, signed)
    if _num(ci[0]) is not None and _num(ci[1]) is not None and stat.get("n", 2) > 1:
        out += f" [{fmt(ci[0], digits, signed)}, {fmt(ci[1], digits, signed)}]"
    return out


def fmt_ms(x: Any) -> str:
    v = _num(x)
    if v is None:
        return DASH
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"


# ---------------------------------------------------------------- cells of one (method, rate) aggregate

def _quality_cell(agg: Mapping[str, Any], task: str) -> str:
    if not agg.get("quality_meaningful", True):
        return NM
    if task in ("math", "math-fewshot"):
        stat = agg.get("number_retention")
        cell = fmt_ci(stat)
        if agg.get("all_numbers_kept") is not None:
            cell += f"; all kept {fmt(agg['all_numbers_kept'], 2)}"
        return cell
    if task == "qa":
        return fmt_ci(agg.get("answer_survival"))
    return DASH


def _gen_cell(agg: Mapping[str, Any], task: str) -> str:
    if not agg.get("quality_meaningful", True):
        return NM
    gen = agg.get("generation")
    if not gen or not gen.get("n"):
        return DASH
    parts = [f"agr {fmt(gen.get('agreement'), 2)}"]
    if task == "math":
        parts.append(f"acc {fmt(gen.get('accuracy_original'), 2)}→{fmt(gen.get('accuracy_compressed'), 2)}")
    else:
        parts.append(f"EM {fmt(gen.get('em_original'), 2)}→{fmt(gen.get('em_compressed'), 2)}")
        parts.append(f"F1 {fmt(gen.get('f1_original'), 2)}→{fmt(gen.get('f1_compressed'), 2)}")
    return " · ".join(parts) + f" (n={gen['n']})"


def _meaningful(agg: Mapping[str, Any], cell: str) -> str:
    return cell if agg.get("quality_meaningful", True) else NM


def _latency_cell(agg: Mapping[str, Any]) -> str:
    lat = agg.get("latency_ms_per_1k") or {}
    if _num(lat.get("p50")) is None:
        return DASH
    return f"{fmt_ms(lat.get('p50'))} / {fmt_ms(lat.get('p95'))}"


def _peak_cell(agg: Mapping[str, Any]) -> str:
    v = _num(agg.get("peak_mb"))
    if v is None:
        return DASH
    return f"{v:,.0f}" + (" ‡" if agg.get("runs_in") == "peer-env" else "")


QUALITY_HEADER = {"math": "number retention [95% CI]", "qa": "answer survival [95% CI]",
                  "summary": "number retention or answer survival", "math-fewshot": "number retention [95% CI]",
                  "mc": "—"}
GEN_HEADER = {"math": "agreement · accuracy orig→comp (sample n)", "qa": "agreement · EM · F1 orig→comp (sample n)",
              "summary": "agreement/EM/F1 (sample n)", "math-fewshot": "small evaluator (not run)",
              "mc": "small evaluator (not run)"}


def method_table(aggregates: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    """The Markdown table of one rate: one line per method."""
    header = ["method", "achieved ratio", "tokens saved", QUALITY_HEADER[task], GEN_HEADER[task],
              "likelihood Δ [95% CI]", "fidelity", "p50 / p95 ms per 1k tokens", "peak MB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for agg in aggregates:
        saved = agg.get("tokens_saved_share")
        saved_cell = DASH if _num(saved) is None else f"{100 * saved:.1f}%"
        row = [
            f"`{agg['method']}`",
            fmt(agg.get("ratio_mean")),
            saved_cell,
            _quality_cell(agg, task),
            _gen_cell(agg, task),
            _meaningful(agg, fmt_ci(agg.get("likelihood_delta"), signed=True)),
            _meaningful(agg, fmt_ci(agg.get("fidelity"))),
            _latency_cell(agg),
            _peak_cell(agg),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _by_rate(metrics: Mapping[str, Any]) -> dict[float, list[Mapping[str, Any]]]:
    out: dict[float, list[Mapping[str, Any]]] = {}
    for agg in metrics["aggregates"]:
        out.setdefault(agg["rate"], []).append(agg)
    return dict(sorted(out.items(), key=lambda kv: rate_key(kv[0])))


def _dataset_line(metrics: Mapping[str, Any]) -> str:
    ds = metrics["dataset"]
    ev = metrics.get("evaluator") or {}
    fb = metrics.get("feedback") or {}
    ev_txt = ev.get("model") or "none"
    fb_txt = f"{fb.get('name')} ({fb.get('kind')})" if fb.get("name") else "none"
    return (f"{ds['name']} ({ds.get('split') or DASH}, task {ds['task']}), {ds['rows']} rows; tokens counted in "
            f"`{metrics['config']['tokenizer']}`; evaluator: {ev_txt}; fidelity model: {fb_txt}; "
            f"{metrics['config']['threads']} thread(s); seed {metrics['config']['seed']}")


def scaling_table(metrics: Mapping[str, Any]) -> list[str]:
    """Median milliseconds per input by input-length bin, and the fitted exponent b in time ∝ tokens^b."""
    scaling = metrics.get("scaling") or {}
    if not scaling:
        return []
    bins = metrics.get("scaling_bins") or []
    header = ["method"] + [b["label"] for b in bins] + ["exponent b"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for method, s in scaling.items():
        cells = [f"`{method}`"] + [fmt_ms(v) for v in s["median_ms_by_bin"]] + [fmt(s.get("exponent"), 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_report(metrics: Mapping[str, Any]) -> str:
    """The whole ``report.md`` of one run."""
    ds, cfg = metrics["dataset"], metrics["config"]
    task = ds["task"]
    from training.downstream import reader_report

    lines = [f"# Compression benchmark: {ds['name']}", "", _dataset_line(metrics) + ".", "",
             f"Command: `{cfg.get('command', '')}`", ""]
    if metrics.get("development"):
        lines += ["**Development run on training rows (to tune heuristics): not a result.**", ""]
    downstream = reader_report(metrics)
    lines += downstream
    if downstream:
        lines += ["## Cheap companions: string survival, the small evaluator, fidelity, latency", "",
                  "Evaluator-free and small-model figures, measured on the same rows; they are not the verdict (a "
                  "prompt can keep the answer string and still be unreadable).", ""]
    for rate, aggs in _by_rate(metrics).items():
        lines += [f"## Target rate {rate_label(rate)}", ""] + method_table(aggs, task) + [""]
    gen_n = (metrics.get("evaluator") or {}).get("gen_rows")
    lines += ["## How to read this", ""]
    lines.append("- **achieved ratio**: mean of compressed / original tokens per row, every method's output counted "
                 f"with the same tokenizer (`{cfg['tokenizer']}`); **tokens saved**: 1 − Σcompressed / Σoriginal.")
    if task == "math":
        lines.append("- **number retention**: share of the question's numbers (digit strings) present in the "
                     "compressed text; *all kept*: share of rows where every number survived.")
    if task == "qa":
        lines.append("- **answer survival**: share of rows where some gold answer still appears in the compressed "
                     "context (case- and whitespace-insensitive); evaluator-free, all rows.")
    ev = metrics.get("evaluator") or {}
    if ev.get("model"):
        if gen_n:
            lines.append(f"- **agreement / accuracy / EM / F1** are generation-based and measured on a **sample: the "
                         f"first {gen_n} rows** of the shuffled set (greedy decoding, evaluator `{ev['model']}`); "
                         "agreement = the evaluator's answer on the compressed prompt equals its answer on the "
                         "original (an unanswered prompt agrees with nothing).")
        else:
            lines.append("- generation-based columns are empty: `--gen-limit 0`.")
        lines.append("- **likelihood Δ**: the evaluator's mean log-probability per token of the reference answer "
                     "(GSM8K: the worked solution; QA: the first gold answer) given the compressed prompt, minus "
                     "given the original (0 = no loss; more negative = more harm); one forward pass each, on "
                     + (f"a **sample: the first {ev['likelihood_rows']} rows**." if ev.get("likelihood_rows") and
                        ev["likelihood_rows"] < ds.get("rows", 10 ** 9) else "all rows."))
    elif ev.get("skipped"):
        lines.append(f"- evaluator columns are empty: {ev['skipped']}.")
    else:
        lines.append("- evaluator columns (agreement, EM/F1, likelihood Δ) are empty: this run used no evaluator "
                     "(`--evaluator none`).")
    fb = metrics.get("feedback") or {}
    if fb.get("name"):
        lines.append(f"- **fidelity**: feedback model `{fb['name']}` ({fb.get('kind')}) score of (original, "
                     "compressed) in [0, 1], all rows. It reads at most a few hundred word pieces per text, so on "
                     "long inputs it judges the beginning only.")
    lines.append("- **latency**: milliseconds of compression per 1,000 input tokens, per row, p50 / p95; first-call "
                 "model loading excluded (a warm-up call); peers in their own environment are timed inside their "
                 "worker process, so environment start-up is not counted.")
    lines.append("- **peak MB**: growth of resident memory from just before the method's first call (its model "
                 "load included) to its peak; ‡ = the peer's own worker process (imports and model included).")
    if any(not a.get("quality_meaningful", True) for a in metrics["aggregates"]):
        lines.append(f"- **{NM}**: not meaningful. `llmlingua2-arch` runs LLMLingua-2's pipeline with a randomly "
                     "initialised model of its smallest architecture (bert-base-multilingual-cased shape): its "
                     "cost is real, its output is noise.")
    cal = metrics.get("calibration")
    if cal:
        lines += ["", "## Fidelity against evaluator agreement", ""]
        if cal.get("error"):
            lines.append(f"Not computed: {cal['error']}")
        elif _num(cal.get("auc")) is None:
            agreed = cal.get("agreed")
            which = "agreed" if agreed == cal.get("n") else "disagreed" if agreed == 0 else "fell in one class"
            lines.append(f"Undefined over {cal.get('n')} (row, method, rate) pairs: every pair {which}, so there is "
                         "nothing for the fidelity score to separate (a larger sample or a stronger evaluator is needed).")
        else:
            lines.append(f"Over {cal.get('n')} (row, method, rate) pairs where agreement was measured: AUC "
                         f"{fmt(cal.get('auc'))}, Brier {fmt(cal.get('brier'))}, best threshold "
                         f"{fmt(cal.get('threshold'))} (accuracy {fmt(cal.get('accuracy'))}). An AUC near 0.5 means "
                         "the fidelity score does not predict whether the evaluator's answer survives.")
    scal = scaling_table(metrics)
    if scal:
        lines += ["", "## Latency by input length", "",
                  "Median milliseconds per row by input length (tokens), and the exponent b of a log-log fit "
                  "time ∝ tokens^b (1 = linear), all rates pooled.", ""] + scal
    peers = metrics.get("peer_env") or {}
    if peers:
        lines += ["", "## Peer environment", ""]
        for method, info in peers.items():
            v = info.get("versions") or {}
            lines.append(f"- `{method}`: " + ", ".join(f"{k} {val}" for k, val in v.items())
                         + f"; model load {fmt(info.get('load_seconds'), 1)} s (not counted); {info.get('note', '')}")
    v = metrics.get("versions") or {}
    lines += ["", "## Versions", "", ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    return "\n".join(lines)
