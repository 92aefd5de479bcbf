"""The evaluation harness: data loaders, in-process peers, the benchmark CLI end to end, the README renderer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, is_subsequence, read_jsonl

ROOT = Path(__file__).resolve().parents[2]
FILES = {
    "gsm8k": "gsm8k/test.jsonl",
    "squad": "squad_v2_dev_subset/squad_v2_dev_first5articles.jsonl",
    "nq": "nq_open_oracle/nq_open_oracle_first500.jsonl",
    "qmsum": "qmsum/test.jsonl",
}
OFFLINE_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


# ---------------------------------------------------------------- loaders

@pytest.mark.parametrize("name", list(FILES))
def test_loaders_give_well_formed_deterministic_rows(name):
    from training.data import load

    read_jsonl(FILES[name], limit=1)  # skip with a reason where the shared data is absent
    rows = load(name, limit=3, seed=0)
    assert len(rows) == 3
    assert [r.id for r in rows] == [r.id for r in load(name, limit=3, seed=0)]  # same rows every time
    assert len({r.id for r in rows}) == 3
    for r in rows:
        assert r.text.strip() and r.answers and all(a.strip() for a in r.answers)
        if name == "gsm8k":
            assert r.task == "math" and r.question is None
            assert r.solution and r.solution.rstrip().endswith(r.answers[0]) and "####" in r.solution
            float(r.answers[0])
        elif name in ("squad", "nq"):
            assert r.task == "qa" and r.question.strip() and r.solution is None
            assert any(a.lower() in r.text.lower() for a in r.answers)  # answerable rows only, gold in the passage
        else:
            assert r.task == "summary" and r.question.strip()
            assert all(": " in line for line in r.text.splitlines()[:20])  # "Speaker: text" lines


def test_limit_takes_a_prefix_of_one_seeded_shuffle():
    from training.data import load

    read_jsonl(FILES["squad"], limit=1)
    five, three = load("squad", limit=5, seed=1), load("squad", limit=3, seed=1)
    assert [r.id for r in five[:3]] == [r.id for r in three]
    assert [r.id for r in load("squad", limit=5, seed=2)] != [r.id for r in five]
    assert len(load("squad")) == 705  # the answerable questions of the subset; unanswerable ones are skipped


def test_a_jsonl_path_in_a_known_format_is_recognised():
    from training.data import load

    read_jsonl(FILES["gsm8k"], limit=1)
    rows = load(str(DATA / FILES["gsm8k"]), limit=2)
    assert rows[0].task == "math" and rows[0].solution


def test_a_custom_jsonl_names_its_fields(tmp_path):
    from training.data import DataError, load

    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"r{i}", "passage": f"Paris is the capital of France {i}.",
                                          "q": "What is the capital?", "gold": ["Paris"]}) for i in range(4)) + "\n")
    rows = load(str(path), text_field="passage", question_field="q", answer_field="gold")
    assert {r.id for r in rows} == {"r0", "r1", "r2", "r3"} and rows[0].task == "qa" and rows[0].answers == ("Paris",)
    with pytest.raises(DataError, match="--text-field"):
        load(str(path))  # unknown format: the error says how to name the fields
    with pytest.raises(DataError, match="no field 'nope'"):
        load(str(path), text_field="nope")


def test_a_missing_data_folder_names_the_path_and_the_fix(tmp_path):
    from training.data import DataError, load

    with pytest.raises(DataError, match="--data-dir") as err:
        load("gsm8k", data_dir=tmp_path / "absent")
    assert str(tmp_path / "absent") in str(err.value)


# ---------------------------------------------------------------- baselines and in-process peers

@pytest.fixture(scope="module")
def peers_registered():
    from benchmarks.peers import register
    from training.baselines import register_baselines

    register_baselines(seed=0)
    register()


def _short_rows():
    from training.data import load

    read_jsonl(FILES["squad"], limit=1)
    return load("squad", limit=2, seed=0) + load("gsm8k", limit=2, seed=0)


@pytest.mark.parametrize("policy", ["random", "truncate"])
def test_cheap_peers_obey_the_budget_and_keep_a_subsequence(peers_registered, policy):
    from rlpc_core import Compressor

    c = Compressor(policy=policy)
    for row in _short_rows():
        for rate in (0.33, 0.5):
            r = c.compress(row.text, rate=rate, query=row.question)
            assert r.method == policy and r.fallback is None
            assert r.budget_met and r.compressed_tokens <= r.target_tokens
            assert 0 < r.compressed_tokens < r.original_tokens
            assert is_subsequence(r.text.split(), row.text.split())
            if policy == "truncate":
                kept = r.text.split()
                assert kept == row.text.split()[: len(kept)]  # the first words, in order
            else:
                assert c.compress(row.text, rate=rate).text == r.text  # seeded: the same prompt, the same output


def test_selective_context_with_the_real_small_lm(peers_registered):
    from rlpc_core import Compressor
    from benchmarks.peers import SelectiveContextPolicy

    rows = _short_rows()[:2]
    c = Compressor(policy="selective-context")
    for row in rows:
        r = c.compress(row.text, rate=0.5)
        assert r.method == "selective-context" and r.fallback is None
        assert r.budget_met and is_subsequence(r.text.split(), row.text.split())

    # Windowing: a window shorter than the text scores every token, and equals one full pass where it fits.
    policy = SelectiveContextPolicy()
    text = " ".join(rows[0].text.split())
    ends, full = policy.token_information(text)
    assert full.shape == ends.shape and np.isfinite(full).all() and (full >= 0).all()
    policy.max_window = 16
    _, windowed = policy.token_information(text)
    assert windowed.shape == full.shape and np.isfinite(windowed).all()
    np.testing.assert_allclose(windowed[:15], full[:15], rtol=1e-3, atol=1e-3)  # first window: same context


# ---------------------------------------------------------------- the benchmark end to end

def _evaluate(out: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    # No reader unless a test names one: the default is the 1.5B judge where it is installed (minutes, not seconds).
    reader = () if "--reader" in args else ("--reader", "none")
    return subprocess.run([sys.executable, "-m", "training.evaluate", *args, *reader, "--out", str(out), "--quiet"],
                          cwd=ROOT, env=OFFLINE_ENV, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def squad_run(tmp_path_factory):
    read_jsonl(FILES["squad"], limit=1)
    out = tmp_path_factory.mktemp("bench") / "squad"
    p = _evaluate(out, "--dataset", "squad", "--methods", "graph,random,truncate,none", "--rate", "0.5",
                  "--limit", "4", "--evaluator", "none", "--feedback", "all-minilm-l6-v2")
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_benchmark_writes_metrics_report_and_plots(squad_run):
    from training.data import load

    metrics = json.loads((squad_run / "metrics.json").read_text())
    for name in ("report.md", "rows.jsonl", "quality_vs_rate.png", "latency.png", "latency_vs_length.png"):
        assert (squad_run / name).stat().st_size > 0, name
    assert metrics["dataset"]["rows"] == 4 and metrics["dataset"]["task"] == "qa"
    assert metrics["config"]["rates"] == [0.5] and metrics["evaluator"]["model"] is None
    assert metrics["feedback"]["kind"] == "bi-encoder"
    aggs = {a["method"]: a for a in metrics["aggregates"]}
    assert set(aggs) == {"graph", "random", "truncate", "none"}
    assert aggs["none"]["ratio_mean"] == 1.0 and aggs["none"]["tokens_saved_share"] == 0.0
    assert aggs["none"]["answer_survival"]["mean"] == 1.0  # every gold answer is in its own context
    for name in ("graph", "random", "truncate"):
        a = aggs[name]
        assert 0.3 < a["ratio_mean"] <= 0.51 and a["budget_met_share"] == 1.0 and a["subsequence_share"] == 1.0
        s = a["answer_survival"]
        assert 0.0 <= s["ci"][0] <= s["mean"] <= s["ci"][1] <= 1.0
        assert 0.0 <= a["fidelity"]["mean"] <= 1.0
        assert a["latency_ms_per_1k"]["p50"] > 0 and a["latency_ms_per_1k"]["p95"] >= a["latency_ms_per_1k"]["p50"]

    rows = [json.loads(line) for line in (squad_run / "rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 4
    texts = {r.id: r.text for r in load("squad", limit=4, seed=0)}
    assert [r["id"] for r in rows if r["method"] == "graph"] == metrics["dataset"]["ids"]
    for r in rows:
        if r["method"] == "truncate":
            kept = r["text"].split()
            assert kept == texts[r["id"]].split()[: len(kept)]
        if r["method"] == "none":
            assert r["text"] == texts[r["id"]] and r["ratio"] == 1.0

    report = (squad_run / "report.md").read_text()
    assert "## Target rate 0.5" in report and "| `graph` |" in report and "answer survival" in report


def test_report_readme_replaces_only_the_marked_block(squad_run, tmp_path):
    from benchmarks.report_readme import main, replace_section

    readme = tmp_path / "README.md"
    readme.write_text("# Title\n\nintro\n<!-- results:start -->\nold\n<!-- results:end -->\n\nafter\n")
    assert main([str(squad_run / "metrics.json"), "--readme", str(readme), "--check"]) == 1  # stale
    assert main([str(squad_run / "metrics.json"), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n<!-- results:start -->\n") and text.endswith("<!-- results:end -->\n\nafter\n")
    assert "old" not in text and "| `truncate` |" in text
    assert main([str(squad_run / "metrics.json"), "--readme", str(readme), "--check"]) == 0  # now up to date
    with pytest.raises(ValueError, match="results:start"):
        replace_section("no markers here", "x")


def test_benchmark_rejects_an_unknown_method(tmp_path):
    read_jsonl(FILES["squad"], limit=1)
    p = _evaluate(tmp_path / "x", "--dataset", "squad", "--methods", "graph,nosuch", "--limit", "2",
                  "--evaluator", "none", "--feedback", "none")
    assert p.returncode == 2 and "unknown method 'nosuch'" in p.stderr and "truncate" in p.stderr
    valid = p.stderr.split("use one of ", 1)[1].split(", or a checkpoint", 1)[0].split(", ")
    assert "truncate" in valid and not {"llmlingua", "longllmlingua", "selective-context"} & set(valid)  # not ours...
    assert "python -m benchmarks.evaluate" in p.stderr  # ...and the error says where they are
    p = subprocess.run([sys.executable, "-m", "benchmarks.evaluate", "--dataset", "squad", "--methods", "graph,nosuch",
                        "--limit", "2", "--reader", "none", "--evaluator", "none", "--feedback", "none",
                        "--out", str(tmp_path / "y")], cwd=ROOT, env=OFFLINE_ENV, capture_output=True, text=True)
    assert p.returncode == 2 and "python -m benchmarks.evaluate: unknown method 'nosuch'" in p.stderr
    assert "longllmlingua" in p.stderr and "selective-context" in p.stderr


def test_a_guide_that_cannot_answer_stops_the_run_before_any_row(tmp_path, monkeypatch, capsys):
    # without the check every row would be compressed without the guide (as a user's call is, saying why) and the
    # plain policy's figures would be reported under the guided label
    from rlpc_core import Compressor
    from rlpc_core.backends import openai as openai_backend
    from training import evaluate

    read_jsonl(FILES["squad"], limit=1)
    monkeypatch.setattr(openai_backend, "BACKOFF_BASE", 0.01)
    folder = Compressor(guide="openai:http://127.0.0.1:9/v1#guide").save_pretrained(tmp_path / "guided")
    code = evaluate.main(["--dataset", "squad", "--methods", f"graph,{folder}", "--limit", "2", "--reader", "none",
                          "--evaluator", "none", "--feedback", "none", "--quiet", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "method 'guided': its guide 'openai:http://127.0.0.1:9/v1#guide' cannot answer" in err, err
    assert "127.0.0.1:9" in err and not (tmp_path / "x" / "compressions.jsonl").exists()


def test_a_guide_that_knows_the_gold_answer_is_a_development_diagnostic_only(tmp_path, capsys):
    # graph+oracle: a perfect pointer to the answer, the ceiling of what a guide can win back. It reads the gold
    # answers, so it runs only in --development runs (whose output is marked as not a result), and it must keep the
    # answer where the plain policy loses it.
    from training import evaluate

    read_jsonl(FILES["squad"], limit=1)
    args = ["--dataset", "squad", "--methods", "graph,graph+oracle", "--limit", "30", "--rate", "0.33", "--reader",
            "none", "--evaluator", "none", "--feedback", "none", "--quiet"]
    code = evaluate.main([*args, "--split", "heldout", "--out", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert code == 2 and "graph+oracle" in err and "--development" in err, err
    assert not (tmp_path / "h" / "compressions.jsonl").exists()
    out = tmp_path / "dev"
    assert evaluate.main([*args, "--split", "train", "--development", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    survived = {m: {r["id"]: r["answer_survival"] for r in rows if r["method"] == m} for m in ("graph", "graph+oracle")}
    gained = sum(survived["graph+oracle"][i] > survived["graph"][i] for i in survived["graph"])
    lost = sum(survived["graph+oracle"][i] < survived["graph"][i] for i in survived["graph"])
    assert gained >= 3 and lost <= 1, survived


def test_an_external_method_plugs_into_the_harness(tmp_path):
    """The hook the benchmarks' peers use: outputs stored as they arrive, a failed row left uncompressed and said."""
    from training import evaluate

    read_jsonl(FILES["squad"], limit=1)
    calls = []

    def compress(requests, *, threads, log_path, progress, scorer):
        calls.append(len(requests))
        for i, req in enumerate(requests):
            words = req["text"].split()
            if i == 0:
                progress({"id": req["id"], "error": "the service said no"})
            else:
                progress({"id": req["id"], "text": " ".join(words[: max(1, int(len(words) * req["rate"]))]),
                          "seconds": 0.01})
        return {"peak_mb": None, "versions": {"half": "1.0"}, "load_seconds": 0.0}

    prepared = []
    evaluate.register_external(evaluate.ExternalMethod("first-words", compress, prepare=prepared.append,
                                                       note="keeps the first words"))
    try:
        out = tmp_path / "ext"
        argv = ["--dataset", "squad", "--split", "heldout", "--methods", "first-words,none", "--rate", "0.5",
                "--limit", "3", "--reader", "none", "--evaluator", "none", "--feedback", "none", "--quiet",
                "--out", str(out)]
        assert evaluate.main(argv) == 0
        assert prepared == [True] and calls == [3]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["methods"]["first-words"]["runs_in"] == "peer-env"
        assert metrics["peer_env"]["first-words"]["note"].startswith("keeps the first words, scorer: ")
        rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
        mine = [r for r in rows if r["method"] == "first-words"]
        failed = [r for r in mine if r["fallback"]]
        assert len(failed) == 1 and "the service said no" in failed[0]["fallback"] and failed[0]["ratio"] == 1.0
        assert all(r["ratio"] < 0.6 for r in mine if not r["fallback"])
        # resumed: the stored compressions are reused, only the failed row is asked again
        assert evaluate.main(argv + ["--resume"]) == 0 and calls == [3, 1]
    finally:
        evaluate.EXTERNAL.pop("first-words", None)


def test_benchmark_with_the_evaluator_on_gsm8k(tmp_path):
    pytest.importorskip("rlpc_core.evaluator", reason="rlpc_core.evaluator is not there yet")
    read_jsonl(FILES["gsm8k"], limit=1)
    out = tmp_path / "gsm8k"
    p = _evaluate(out, "--dataset", "gsm8k", "--methods", "graph,truncate,none", "--rate", "0.5", "--limit", "2",
                  "--gen-limit", "2", "--evaluator", "smollm2-135m-instruct", "--math-max-new-tokens", "16",
                  "--no-eval-cache", "--feedback", "all-minilm-l6-v2")
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["evaluator"]["model"] == "smollm2-135m-instruct" and metrics["evaluator"]["gen_rows"] == 2
    aggs = {a["method"]: a for a in metrics["aggregates"]}
    assert aggs["none"]["likelihood_delta"]["mean"] == 0.0  # the original against itself
    for name in ("graph", "truncate"):
        a = aggs[name]
        assert a["generation"]["n"] == 2 and 0.0 <= a["generation"]["agreement"] <= 1.0
        assert np.isfinite(a["likelihood_delta"]["mean"])
        assert a["number_retention"]["n"] == 2
    assert aggs["graph"]["number_retention"]["mean"] == 1.0  # the graph protects every number
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    originals = {(r["id"], r["ll_original"]) for r in rows if "ll_original" in r}
    assert len(originals) == 2  # the original's likelihood is one value per row, whichever method asks
    assert "(n=2)" in (out / "report.md").read_text()


# ---------------------------------------------------------------- peers in their own environment

@pytest.mark.slow
@pytest.mark.parametrize("method", ["llmlingua", "llmlingua2-arch"])
def test_llmlingua_peers_in_their_own_environment(method, tmp_path):
    """Builds the peer environment on first use (a few minutes); covered by the committed benchmark."""
    from benchmarks.peers import run_env_peer

    text = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in "
            "France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway. ") * 3
    reqs = [{"id": f"r{i}", "text": text, "question": None, "rate": rate} for i, rate in enumerate((0.33, 0.5))]
    run = run_env_peer(method, reqs, threads=1, log_path=tmp_path / "worker.log", quiet=True)
    assert set(run.outputs) == {"r0", "r1"}
    for out in run.outputs.values():
        assert "error" not in out and out["seconds"] > 0 and out["text"].strip()
        assert len(out["text"].split()) < len(text.split())
    assert run.ready["versions"]["transformers"].startswith("4.") and run.peak_mb and run.peak_mb > 100


def test_paired_differences_against_the_reference(tmp_path):
    from training import paired

    rows = []
    for i in range(20):
        for m, v in (("graph", float(i % 2)), ("mine", 1.0), ("none", 1.0)):
            rows.append({"id": str(i), "method": m, "rate": 0.5, "task": "qa", "answer_survival": v, "ll_delta": None,
                         "text": "same" if m != "mine" or i < 15 else "other"})
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert paired.main([str(tmp_path)]) == 0
    out = json.loads((tmp_path / "paired.json").read_text())["paired"]
    assert set(out) == {"mine"}  # the reference and the no-compression baseline are not compared
    ci = out["mine"]["0.5"]["answer_survival"]
    assert ci["mean"] == 0.5 and (ci["wins"], ci["losses"]) == (10, 0) and ci["ci"][0] > 0
    assert "pooled" in out["mine"] and "+0.500" in (tmp_path / "paired.md").read_text()
    assert out["mine"]["0.5"]["texts_differ"] == {"changed": 5, "rows": 20}
    assert "| `mine` | 0.5 | compressed text differs | 5 of 20 rows | — |" in (tmp_path / "paired.md").read_text()
    # another reference writes beside the graph's comparison instead of over it
    assert paired.main([str(tmp_path), "--reference", "mine"]) == 0
    assert (tmp_path / "paired-vs-mine.md").is_file() and "+0.500" in (tmp_path / "paired.md").read_text()
    assert json.loads((tmp_path / "paired-vs-mine.json").read_text())["paired"]["graph"]["0.5"]["answer_survival"]["mean"] == -0.5


def test_fallback_summary_counts_reasons_and_the_policys_own_ratio():
    from training.evaluate import fallback_summary

    rows = [{"ratio": 0.8, "fallback": None}, {"ratio": 0.6, "fallback": None},
            {"ratio": 0.5, "fallback": "the rewrite dropped numbers: 12"},
            {"ratio": 0.5, "fallback": "the rewrite dropped numbers: 7, 9"},
            {"ratio": 0.5, "fallback": "generative raised RuntimeError: boom"}]
    s = fallback_summary(rows)
    assert s["fallbacks"] == 3 and s["ratio_without_fallback"] == pytest.approx(0.7)
    assert s["fallback_reasons"] == {"the rewrite dropped numbers": 2, "generative raised RuntimeError": 1}
    assert fallback_summary([{"ratio": 0.5, "fallback": "x"}])["ratio_without_fallback"] is None


# ---------------------------------------------------------------- settings built from the shared files

def test_squad_multi_puts_each_question_among_its_articles_paragraphs():
    from training.data import MULTI_PARAGRAPHS, SQUAD_TRAIN_ARTICLES, load

    rows = read_jsonl(FILES["squad"])
    title_of = {r["context"]: r["title"] for r in rows}
    multi = load("squad-multi", split="heldout", limit=20, seed=0)
    assert multi == load("squad-multi", split="heldout", limit=20, seed=0)  # deterministic
    positions = set()
    for e in multi:
        assert e.task == "qa" and e.id.endswith("-multi") and len(e.units) == MULTI_PARAGRAPHS
        assert e.text == "\n\n".join(e.units)
        titles = {title_of[u] for u in e.units}
        assert len(titles) == 1 and not titles & SQUAD_TRAIN_ARTICLES  # one held-out article, never a train one
        gold = [u for u in e.units if any(a in u for a in e.answers)]
        assert gold, "the question's own paragraph is in its context"
        positions.add(e.units.index(gold[0]))
    assert len(positions) > 3  # the gold paragraph is not always in one place
    train = load("squad-multi", split="train", limit=5, seed=0)
    assert all(title_of[e.units[0]] in SQUAD_TRAIN_ARTICLES for e in train)


def test_nq_20docs_hides_the_gold_passage_at_a_seeded_depth_and_partitions_as_nq():
    from training.data import load

    part1 = "nq_open_20docs/nq-open-20_total_documents_gold_at_0.first441.part1.jsonl"
    raw = read_jsonl(part1) + read_jsonl(part1.replace("part1", "part2"))
    gold_of = {r["question"]: r["ctxs"][0] for r in raw}
    rows = load("nq-20docs", split="heldout", limit=40, seed=0)
    assert rows == load("nq-20docs", split="heldout", limit=40, seed=0)  # deterministic
    depths = set()
    for e in rows:
        assert e.task == "qa" and len(e.units) == 20 and e.text == "\n\n".join(e.units)
        gold = gold_of[e.question]
        at = [i for i, u in enumerate(e.units) if u == f"(Title: {gold['title']}) {' '.join(gold['text'].split())}"]
        assert len(at) == 1
        depths.add(at[0])
    assert len(depths) > 8 and max(depths) > 10  # the file's gold-first order is gone: truncation cannot win by it
    # the same questions as the single-passage nq file, on the same side of the train / held-out split
    train = {e.question for e in load("nq-20docs", split="train")}
    held = {e.question for e in load("nq-20docs", split="heldout")}
    assert not train & held and len(train) + len(held) == len(raw)
    assert not held & {e.question for e in load("nq", split="train")}
    assert train <= {e.question for e in load("nq", split="train")}


def test_gsm8k_fewshot_takes_its_examples_from_train_and_keeps_the_question_whole():
    from training.data import load

    train_questions = {r["question"].strip() for r in read_jsonl("gsm8k/train.jsonl")}
    test_questions = {r["question"] for r in read_jsonl(FILES["gsm8k"])}
    rows = load("gsm8k-fewshot", limit=5, seed=0)
    assert len({e.text for e in rows}) == 1  # one block of worked examples before every question
    for e in rows:
        assert e.task == "math-fewshot" and e.question in test_questions and e.answers[0].lstrip("-").replace(".", "").isdigit()
        assert e.question not in e.text
    demos = rows[0].units
    assert 8 <= len(demos) <= 30 and 1300 <= sum(len(d.split()) for d in demos) < 1600
    for d in demos:
        q = d.split("\nAnswer: ", 1)[0].removeprefix("Question: ").strip()
        assert q in train_questions and "####" in d and "<<" not in d


def test_a_multiple_choice_file_keeps_its_options_in_the_question(tmp_path):
    from rlpc_core.evaluator import build_prompt, extract_choice
    from training.data import DataError, load
    from training.downstream import score

    path = tmp_path / "mc.jsonl"
    rows = [{"id": "q1", "context": "The sky over Paris was blue that day.", "question": "What colour was the sky?",
             "options": ["red", "blue", "green"], "answer": "B"},
            {"id": "q2", "context": "Seven is prime.", "question": "Which is NOT prime?", "options": ["7", "9"],
             "answer": 1}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    got = {e.id: e for e in load(str(path))}
    assert got["q1"].task == "mc" and got["q1"].question.endswith("(A) red\n(B) blue\n(C) green")
    assert got["q2"].answers == ("B",)
    prompt = build_prompt("mc", got["q1"].text, got["q1"].question)
    assert "letter" in prompt and "(C) green" in prompt
    assert score("mc", "(B) blue", extract_choice("(B) blue"), ("B",))["accuracy"] == 1.0
    assert score("mc", "A", extract_choice("A"), ("B",))["accuracy"] == 0.0
    path.write_text(json.dumps({**rows[0], "answer": "Z"}))
    with pytest.raises(DataError, match="answer 'Z'"):
        load(str(path))


def test_compressions_are_stored_as_they_are_made_and_reused_on_resume(tmp_path):
    read_jsonl(FILES["gsm8k"], limit=1)
    out = tmp_path / "fewshot"
    args = ("--dataset", "gsm8k-fewshot", "--methods", "graph,truncate,none", "--rate", "0.5", "--limit", "3",
            "--evaluator", "none", "--feedback", "none", "--tokenizer", "words")
    p = _evaluate(out, *args)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    graph = [r for r in rows if r["method"] == "graph"]
    assert len(graph) == 3 and {r["shared_by"] for r in graph} == {3} and len({r["text"] for r in graph}) == 1
    stored = (out / "compressions.jsonl").read_text().splitlines()
    assert len(stored) == 2  # one compression per method (none compresses nothing): the rows share one block
    p = _evaluate(out, *args, "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert (out / "compressions.jsonl").read_text().splitlines() == stored  # nothing recomputed


def test_a_changed_checkpoint_or_code_changes_the_compression_key(tmp_path, monkeypatch):
    """--resume must not reuse what other weights or older code compressed: the key holds a fingerprint of both."""
    import rlpc_core
    from training.evaluate import CompressionStore, Method, code_fingerprint

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "rlpc.json").write_text("{}")
    (ckpt / "extractive.safetensors").write_bytes(b"weights one")
    method = Method("ckpt", str(ckpt), "in-process")
    first = code_fingerprint(method)
    assert code_fingerprint(method) == first  # stable
    (ckpt / "extractive.safetensors").write_bytes(b"weights two")
    assert code_fingerprint(method) != first
    graph = Method("graph", "graph", "in-process")
    key = CompressionStore.key(graph, 0.5, "text", None, code_fingerprint(graph))
    # a copy of rlpc_core with one source line changed fingerprints differently
    import shutil

    copy = tmp_path / "rlpc_core"
    shutil.copytree(Path(rlpc_core.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "selection.py").write_text((copy / "selection.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(rlpc_core, "__file__", str(copy / "__init__.py"))
    assert CompressionStore.key(graph, 0.5, "text", None, code_fingerprint(graph)) != key


# ---------------------------------------------------------------- downstream accuracy with a real reader

needs_llama_cpp = pytest.mark.skipif(__import__("importlib").util.find_spec("llama_cpp") is None,
                                     reason="llama-cpp-python is not installed (pip install 'rlpc[reader]'; CI installs it)")


@needs_llama_cpp
@pytest.mark.parametrize("reader", ["llamacpp:smollm2-135m-instruct", "serve:smollm2-135m-instruct"])
def test_benchmark_with_a_reader_reports_accuracy_lost_against_the_original(reader, tmp_path):
    read_jsonl(FILES["squad"], limit=1)
    out = tmp_path / "squad"
    p = _evaluate(out, "--dataset", "squad", "--split", "heldout", "--methods", "graph,truncate,none", "--rate", "0.5",
                  "--limit", "3", "--evaluator", "none", "--feedback", "none", "--reader", reader,
                  "--reader-n-ctx", "1024", "--qa-max-new-tokens", "12")
    assert p.returncode == 0, p.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    info = metrics["reader"]
    assert info["task"] == "qa" and "{text}" in info["prompt"] and info["distinct_prompts"] <= 3 * 3
    if reader.startswith("serve:"):
        assert info["served"] == reader and info["spec"].startswith("openai:http://127.0.0.1:")
    aggs = {a["method"]: a for a in metrics["aggregates"]}
    none = aggs["none"]["reader"]
    assert none["accuracy_lost"]["mean"] == 0.0 and none["n"] == 3
    for m in ("graph", "truncate"):
        rd = aggs[m]["reader"]
        assert rd["n"] == 3 and 0.0 <= rd["accuracy"]["mean"] <= 1.0
        lost = rd["accuracy_lost"]
        assert lost["mean"] == pytest.approx(none["accuracy"]["mean"] - rd["accuracy"]["mean"])
        assert lost["worse"] + lost["better"] <= 3 and {"em", "f1", "contains", "em_lost"} <= set(rd)
        e2e = rd["end_to_end"]
        assert e2e["n"] == 3 and e2e["prompt_tokens"] < e2e["prompt_tokens_original"]
        assert 0 < e2e["billed_tokens_saved_share"] < 1
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["reader_accuracy"] in (0.0, 1.0) and r["reader_accuracy_original"] in (0.0, 1.0)
        assert "<|im_start|>" not in r["reader_reply"]
    report = (out / "report.md").read_text()
    assert "## Downstream accuracy" in report and "accuracy lost" in report and "| `truncate` | 0.5 |" in report
    assert (out / "accuracy_lost.png").stat().st_size > 0
    # every reply the run used is in its folder, whether computed now or found in this machine's cache
    from rlpc_core.evaluator import EvalCache

    assert len(EvalCache(tmp_path / "another-machine.sqlite", journal=out / "reader_replies.jsonl")) == \
        info["distinct_prompts"]
    if reader.startswith("serve:"):
        # every answer is cached, keyed by the weights: a second run, a server on another port, computes nothing
        p = _evaluate(out, "--dataset", "squad", "--split", "heldout", "--methods", "graph,truncate,none", "--rate",
                      "0.5", "--limit", "3", "--evaluator", "none", "--feedback", "none", "--reader", reader,
                      "--reader-n-ctx", "1024", "--qa-max-new-tokens", "12")
        assert p.returncode == 0, p.stderr[-3000:]
        assert json.loads((out / "metrics.json").read_text())["reader"]["computed"] == 0

    from benchmarks import reader_summary

    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- reader:start -->\nold\n<!-- reader:end -->\ntail\n")
    assert reader_summary.main([str(tmp_path), "--readme", str(readme)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["datasets"]) == {"squad"} and "graph" in summary["pooled_qa"]["methods"]
    text = readme.read_text()
    assert "old" not in text and "Accuracy lost against the uncompressed prompt" in text and text.endswith("tail\n")


def test_before_rows_come_only_from_methods_the_earlier_run_measured():
    from benchmarks.reader_summary import add_before

    def run(methods, ids):
        return {"name": "nq-20docs", "rows": [{"id": i, "method": m} for m in methods for i in ids],
                "metrics": {"aggregates": [{"method": m} for m in methods], "config": {"methods": list(methods)}}}

    now, earlier = run(["graph", "none"], ["a", "b"]), run(["graph", "none"], ["a", "b", "c"])
    add_before([now], [earlier], ["graph", "extractive"])
    assert now["metrics"]["config"]["methods"] == ["graph", "none", "graph (before)"]  # no empty extractive line
    assert sorted(r["id"] for r in now["rows"] if r["method"] == "graph (before)") == ["a", "b"]  # the same rows
    # a second earlier folder (repeated --before) adds nothing twice: the first that has the dataset gives its rows
    add_before([now], [run(["graph"], ["a", "b"])], ["graph"])
    assert sum(r["method"] == "graph (before)" for r in now["rows"]) == 2


def test_the_report_says_how_often_the_reader_ran_out_of_new_tokens():
    """A chain of thought cut by the generation budget is scored wrong whatever it read: the table says how often."""
    from training.downstream import reader_aggregate, reader_table

    def rows(finish, finish_original):
        return [{"reader_accuracy": 0.0, "reader_accuracy_original": 1.0, "reader_finish": f,
                 "reader_finish_original": fo} for f, fo in zip(finish, finish_original)]

    graph = reader_aggregate(rows(["length", "stop", "stop", "stop"], ["length", "length", "stop", "stop"]), seed=0,
                             throughput=None)
    assert graph["ran_out_of_tokens"] == 0.25 and graph["ran_out_of_tokens_original"] == 0.5
    none = reader_aggregate(rows(["length", "length", "stop", "stop"], ["length", "length", "stop", "stop"]), seed=0,
                            throughput=None)
    metrics = {"aggregates": [{"method": "none", "rate": 0.5, "ratio_mean": 1.0, "reader": none},
                              {"method": "graph", "rate": 0.5, "ratio_mean": 0.5, "reader": graph}]}
    head, _, first, second = reader_table(metrics)
    assert "ran out of new tokens %" in head
    assert first.startswith("| `none` |") and "| 50 |" in first and "| 25 |" in second
    for a in metrics["aggregates"]:  # no reply cut: no such column
        a["reader"].update(ran_out_of_tokens=0.0, ran_out_of_tokens_original=0.0)
    assert "ran out" not in reader_table(metrics)[0]


def test_skip_takes_the_rows_after_the_first_n_of_the_seeded_shuffle(tmp_path, capsys):
    """--skip N reads the rows a recipe with data.limit N (same seed) did not train on."""
    from training import evaluate
    from training.data import load

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"context": f"Row {i} says the colour is shade {i}.", "question": "Which shade?",
                                        "answers": [f"shade {i}"]}) + "\n" for i in range(6)))
    argv = ["--dataset", str(data), "--methods", "none", "--rate", "0.5", "--reader", "none", "--evaluator", "none",
            "--feedback", "none", "--quiet"]
    assert evaluate.main(argv + ["--skip", "2", "--limit", "3", "--out", str(tmp_path / "a")]) == 0
    ids = [json.loads(line)["id"] for line in (tmp_path / "a" / "rows.jsonl").read_text().splitlines()]
    assert ids == [e.id for e in load(str(data), seed=0)[2:5]]
    assert evaluate.main(argv + ["--skip", "6", "--out", str(tmp_path / "b")]) == 2  # nothing left: a clear error
    assert "--skip 6 leaves no rows" in capsys.readouterr().err
