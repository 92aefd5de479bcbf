"""Examples are run as users run them."""

import subprocess
import sys
from pathlib import Path

from conftest import DATA, read_jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_compress_prompt_example_on_gsm8k():
    read_jsonl("gsm8k/test.jsonl", limit=1)  # skips with a reason where the shared data is absent
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "compress_prompt.py"), "--data",
                        str(DATA / "gsm8k" / "test.jsonl"), "--limit", "3"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "saved" in p.stdout and "over 3 prompts" in p.stdout


def test_example_rejects_a_missing_data_path(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "compress_prompt.py"), "--data",
                        str(tmp_path / "missing.jsonl")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_langchain_chain_example_answers_with_a_real_local_llm():
    read_jsonl("gsm8k/test.jsonl", limit=1)
    p = subprocess.run([sys.executable, str(ROOT / "examples" / "langchain_chain.py"), "--limit", "2",
                        "--max-new-tokens", "16"], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "tokens saved:" in p.stdout and "over 2 questions" in p.stdout
    assert p.stdout.count("every number and protected span kept: True") == 2
