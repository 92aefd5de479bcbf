"""The CLI through a subprocess, as a user runs it."""

import json
import subprocess
import sys

import pytest

RLPC = [sys.executable, "-m", "rlpc_core"]
TEXT = ("The library opened in 1897 and holds 2,400 rare maps donated by merchants of the port city. "
        "Visitors may read them in the east wing on weekdays between nine and five.")


def run(*args, stdin=None):
    return subprocess.run([*RLPC, *args], input=stdin, capture_output=True, timeout=120)


def test_compress_text_prints_only_the_prompt():
    p = run("compress", TEXT, "--rate", "0.5", "--tokenizer", "words")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode().strip()
    assert 0 < len(out.split()) < len(TEXT.split()) and "1897" in out and "2,400" in out


def test_json_has_every_field():
    p = run("compress", TEXT, "--json", "--target-tokens", "12", "--tokenizer", "words", "--query", "When did it open?")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    for key in ("text", "original_tokens", "compressed_tokens", "tokenizer", "ratio", "kept", "protected_ok",
                "budget_met", "method", "seconds", "fallback", "target_tokens", "saved_tokens"):
        assert key in data
    assert data["compressed_tokens"] <= 12 and data["tokenizer"] == "words" and len(data["kept"]) == len(TEXT.split())


def test_stdin_and_file(tmp_path):
    p = run("compress", "--tokenizer", "words", stdin=TEXT.encode())
    assert p.returncode == 0 and "1897" in p.stdout.decode()
    f = tmp_path / "prompt.txt"
    f.write_text(TEXT, encoding="utf-8")
    q = run("compress", "-f", str(f), "--tokenizer", "words", "--protect", "east wing")
    assert q.returncode == 0 and "east wing" in q.stdout.decode()


def test_example_runs_with_the_default_compressor():
    p = run("compress", "--example")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    compressed = out.split("Compressed prompt:")[1]
    assert "smollm2-135m-instruct" in out and "<keep>" not in compressed and "Answer the following" in compressed


@pytest.mark.parametrize("args, fragment", [
    (["compress", "x y z", "--rate", "1.5", "--tokenizer", "words"], "rate=1.5 is outside"),
    (["compress", "x y z", "--target-tokens", "0", "--tokenizer", "words"], "target_tokens=0"),
    (["compress", "x", "--rate", "0.5", "--target-tokens", "3"], "not allowed with argument"),
    (["compress", "x y", "--policy", "magic"], "unknown policy 'magic'"),
    (["compress", "x y", "--protect-regex", "(unclosed", "--tokenizer", "words"], "not a valid regular expression"),
    (["compress", "-f", "/no/such/file.txt"], "cannot read -f"),
    (["compress", "a <keep>b", "--tokenizer", "words"], "never closed"),
    (["models", "pull", "no-such-model"], "unknown model"),
])
def test_bad_usage_exits_2_with_a_message(args, fragment):
    p = run(*args)
    assert p.returncode == 2
    assert fragment in p.stderr.decode(), p.stderr.decode()


def test_undecodable_file_is_a_clear_error(tmp_path):
    f = tmp_path / "latin.txt"
    f.write_bytes("café prices rose by 5%".encode("latin-1"))
    p = run("compress", "-f", str(f), "--tokenizer", "words")
    assert p.returncode == 2 and "--encoding" in p.stderr.decode() and "0xe9" in p.stderr.decode()
    ok = run("compress", "-f", str(f), "--tokenizer", "words", "--encoding", "latin-1", "--rate", "1")
    assert ok.returncode == 0 and "café" in ok.stdout.decode()


def test_models_list():
    p = run("models", "list", "--json")
    assert p.returncode == 0, p.stderr
    aliases = {row["alias"] for row in json.loads(p.stdout)}
    assert {"smollm2-135m-instruct", "all-minilm-l6-v2"} <= aliases


def test_a_guide_on_the_command_line_and_when_it_cannot_answer():
    text = "The depot opened in 1951. Its architect was Hanna Reuter. The roof burned in 1960 and was rebuilt."
    plain = run("compress", text, "--rate", "0.5", "--query", "Who built it?")
    down = run("compress", text, "--rate", "0.5", "--query", "Who built it?", "--guide", "openai:http://127.0.0.1:9/v1#g")
    assert down.returncode == 0 and down.stdout == plain.stdout  # compressed without it...
    err = down.stderr.decode()
    assert "fell back: guide 'openai:http://127.0.0.1:9/v1#g' raised ReaderUnavailable" in err  # ...saying why
    assert "Traceback" not in err
    bad = run("compress", text, "--query", "Who built it?", "--guide", "llamacpp:no/such.gguf")
    assert bad.returncode == 2 and "no such file" in bad.stderr.decode()
    # how much of a long text the guide reads: a setting of the selection, checked like the others
    reads = run("compress", text, "--rate", "0.5", "--query", "Who built it?", "--guide", "openai:http://127.0.0.1:9/v1#g",
                "--guide-reads", "512")
    assert reads.returncode == 0 and reads.stdout == plain.stdout
    wrong = run("compress", text, "--query", "Who built it?", "--guide", "openai:http://127.0.0.1:9/v1#g",
                "--guide-reads", "-1")
    assert wrong.returncode == 2 and "guide_reads=-1 must be an integer >= 0" in wrong.stderr.decode()
