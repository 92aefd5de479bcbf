"""The extractive policy: a MiniLM token classifier that scores every word keep/drop in one forward pass.

What it sees: the question (when there is one) and a chunk of the context as a sentence pair,
``[CLS] question [SEP] chunk [SEP]``, plus per-word features from the importance graph (its score, number,
stopword, query-term, question-sentence, entity flags and the word's position), broadcast to the word's
pieces. What it says: one logit per word piece, averaged into one score per word. The compressor then keeps
the highest-scoring words within the budget, protected words always (numbers are protected by the graph), so
the output is an order-preserving subsequence of the input: it cannot invent anything.

Long inputs are cut into chunks of whole words that fit the encoder's window next to the question, scored in
batches, so cost grows linearly with length.

Weights: a checkpoint folder holds ``extractive.json`` (base model, LoRA rank/scale, head size, features)
and ``extractive.safetensors`` (the LoRA update of the encoder and the head). The base is the embedded
all-MiniLM-L6-v2; the update is merged into it at load, so inference costs a bare forward of the base. The
trained default ships inside the package (:data:`EMBEDDED_WEIGHTS`).
"""

from __future__ import annotations

import json
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from ..config import CompressorConfig, ExtractiveConfig, GraphConfig
from ..graph import NEGATIONS, query_lemmas, score_words, word_features
from .base import WordScores

WEIGHTS_JSON = "extractive.json"
WEIGHTS_FILE = "extractive.safetensors"
WEIGHTS_FORMAT = "rlpc-extractive/2"  # 2: graph-prior head (scale, sentence share)
#: The trained head + adapter shipped in the package (see its README.md, the model card).
EMBEDDED_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "extractive-minilm"
#: Per-word features, in the order the head reads them.
FEATURES = ("graph_log_score", "graph_rank", "is_number", "is_stopword", "is_query_term", "in_question",
            "position", "is_entity")


# ---------------------------------------------------------------- features and encoding (no torch)

def word_feature_matrix(words: Sequence[str], graph: GraphConfig,
                        query: Optional[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features [n, len(FEATURES)] float32, protected [n] bool, sentence [n] int64)``: the graph's view of
    every word (feature 0 is the graph's log-score, the model's prior) and the sentence each word is in."""
    n = len(words)
    scored = score_words(words, graph, query=query)
    feats = word_features(words)
    scores = np.clip(scored.scores, 1e-3, None)
    rank = np.empty(n, dtype=np.float64)
    rank[np.argsort(scores, kind="stable")] = np.arange(n) / max(1, n - 1)
    negation = np.fromiter((x in NEGATIONS for x in feats.norm), dtype=bool, count=n)
    q = set(query_lemmas(query))
    in_query = np.fromiter((bool(q) and lem in q for lem in feats.lemma), dtype=bool, count=n)
    out = np.stack([
        np.log(scores), rank, feats.is_number, feats.is_stop & ~negation, in_query, feats.in_question,
        np.arange(n) / max(1, n - 1), feats.is_entity,
    ], axis=1).astype(np.float32)
    return out, scored.protected, feats.sentence.astype(np.int64)


@dataclass
class EncodedChunks:
    """A document cut into encoder inputs: padded id/type/mask arrays and each piece's word (``-1`` if none)."""

    input_ids: np.ndarray  # [chunks, length] int64
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    word_index: np.ndarray  # [chunks, length] int64: word of the document each context piece belongs to, else -1
    n_words: int


def encode(tokenizer: Any, words: Sequence[str], query: Optional[str], *, max_length: int,
           query_max_tokens: int) -> EncodedChunks:
    """Word-piece the words once, cut them into chunks of whole words that fit ``max_length`` beside the query."""
    n = len(words)
    enc = tokenizer(list(words), is_split_into_words=True, add_special_tokens=False, truncation=False,
                    return_attention_mask=False, verbose=False)
    ids = np.asarray(enc["input_ids"], dtype=np.int64)
    word_of = np.asarray([-1 if w is None else w for w in enc.word_ids()], dtype=np.int64)
    q_ids: list[int] = []
    if query:
        q_ids = tokenizer(query, add_special_tokens=False, truncation=True, max_length=query_max_tokens,
                          verbose=False)["input_ids"]
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    prefix = [cls] + (q_ids + [sep] if q_ids else [])
    room = max_length - len(prefix) - 1
    if room < 8:
        raise ValueError(f"max_length={max_length} leaves {room} pieces for the text beside a {len(q_ids)}-piece "
                         "question; raise max_length or lower query_max_tokens")
    # Chunks of about equal size (n / ceil(n / room)), not full ones plus a short rest: chunks are batched, and a
    # short last chunk would be padded to the longest one (1,100 pieces as 512 + 512 + 76 cost 1,536 positions).
    # The size is recomputed for what remains, so cuts moved back to word ends do not pile up in the last chunk.
    # A word whose pieces alone exceed the room (a very long URL) is cut; its first pieces still score it.
    chunks: list[tuple[int, int]] = []
    lo = 0
    while lo < len(ids):
        rest = len(ids) - lo
        hi = lo + -(-rest // -(-rest // room))
        if hi < len(ids) and word_of[hi] == word_of[hi - 1]:  # do not split a word across chunks:
            start = hi  # cut before the word that piece ``hi`` belongs to, unless it fills the whole chunk
            while start > lo and word_of[start - 1] == word_of[hi]:
                start -= 1
            hi = start if start > lo else hi
        chunks.append((lo, hi))
        lo = hi
    if not chunks:
        chunks = [(0, 0)]
    length = len(prefix) + 1 + max(h - l for l, h in chunks)
    m = len(chunks)
    input_ids = np.zeros((m, length), dtype=np.int64)
    types = np.zeros((m, length), dtype=np.int64)
    mask = np.zeros((m, length), dtype=np.int64)
    word_index = np.full((m, length), -1, dtype=np.int64)
    p = len(prefix)
    for c, (lo, hi) in enumerate(chunks):
        k = hi - lo
        input_ids[c, :p] = prefix
        input_ids[c, p : p + k] = ids[lo:hi]
        input_ids[c, p + k] = sep
        mask[c, : p + k + 1] = 1
        if q_ids:
            types[c, p : p + k + 1] = 1
        word_index[c, p : p + k] = word_of[lo:hi]
    return EncodedChunks(input_ids, types, mask, word_index, n)


# ---------------------------------------------------------------- the model (torch, imported lazily)

def build_model(encoder: Any, *, n_features: int = len(FEATURES), head_dim: int = 128,
                prior_sentence_share: float = 0.0) -> Any:
    """The keep/drop scorer: ``encoder`` (a BertModel) + a head over [piece state; word features].

    A word's logit is a prior from the importance graph, ``scale * ((1 - s) * g + s * sentence_mean(g))`` with
    ``g`` the graph's log-score (feature 0), plus a learned residual: the head's MLP output, averaged over the
    word's pieces and pulled towards its sentence's mean too. Both shares are learned; pooling over sentences
    keeps whole relevant sentences, and so answer spans, intact (a dropped "the" breaks "the Seine river"). The
    MLP's last layer starts at zero: an untrained model ranks words by the prior alone, which with
    ``prior_sentence_share=0`` is exactly the graph policy's ranking.
    """
    import torch
    from torch import nn

    class Head(nn.Module):
        def __init__(self, hidden: int) -> None:
            super().__init__()
            self.mlp = nn.Sequential(nn.Linear(hidden + n_features, head_dim), nn.GELU(), nn.Linear(head_dim, 1))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
            self.prior_scale = nn.Parameter(torch.ones(()))  # weight of the graph's log-score
            share = min(max(prior_sentence_share, 1e-4), 1 - 1e-4)
            # sigmoid -> share of the sentence mean in the prior (exactly 0 when asked for 0: the graph's ranking)
            self.prior_share = nn.Parameter(torch.tensor(float("-inf") if prior_sentence_share == 0 else
                                                         math.log(share / (1 - share))),
                                            requires_grad=prior_sentence_share != 0)
            self.sentence_share = nn.Parameter(torch.zeros(()))  # sigmoid -> share of the sentence mean (0.5)

    class WordKeepModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.head = Head(encoder.config.hidden_size)
            self.n_features, self.head_dim = n_features, head_dim

        def forward(self, input_ids, token_type_ids, attention_mask, features, word_index, n_words: int,
                    word_sentence):
            """Word logits ``[n_words]``; ``word_index`` maps pieces to words and ``word_sentence`` words to
            sentences, both numbered over the whole batch (every word's pieces in this batch)."""
            residual = self.residual(input_ids, token_type_ids, attention_mask, features, word_index, n_words)
            return self.combine(residual, features, word_sentence)

        def residual(self, input_ids, token_type_ids, attention_mask, features, word_index, n_words: int):
            """The MLP's per-word output (mean over its pieces); 0 for words without pieces in this batch."""
            states = self.encoder(input_ids=input_ids, token_type_ids=token_type_ids,
                                  attention_mask=attention_mask).last_hidden_state
            at = word_index >= 0
            piece_words = word_index[at]
            piece_out = self.head.mlp(torch.cat([states[at], features[piece_words]], dim=-1)).squeeze(-1)
            return _segment_mean(piece_out, piece_words, n_words)

        def combine(self, residual, features, word_sentence):
            """The graph prior and the residual, each pulled towards its sentence's mean (over all its words)."""
            n_sent = int(word_sentence.max()) + 1 if word_sentence.numel() else 0

            def pooled(x, share_logit):
                share = torch.sigmoid(share_logit)
                return (1 - share) * x + share * _segment_mean(x, word_sentence, n_sent)[word_sentence]

            prior = pooled(features[:, 0].to(residual.dtype), self.head.prior_share)
            return self.head.prior_scale * prior + pooled(residual, self.head.sentence_share)

    return WordKeepModel()


def _segment_mean(values: Any, segments: Any, n: int) -> Any:
    """Mean of ``values`` per segment id (``0..n-1``); empty segments are 0."""
    import torch

    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, segments, values)
    counts = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, segments, torch.ones_like(values))
    return sums / counts.clamp(min=1.0)


def load_encoder(spec: str) -> tuple[Any, Any]:
    """``(BertModel, fast tokenizer)`` of a MiniLM-style encoder (embedded alias, folder or hub id)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from ..models import _from_pretrained, resolve

    resolved = resolve(spec)
    tok = _from_pretrained(AutoTokenizer.from_pretrained, spec, resolved, trust_remote_code=False)
    model = _from_pretrained(AutoModel.from_pretrained, spec, resolved, dtype=torch.float32,
                             trust_remote_code=False, use_safetensors=True)
    model.pooler = None  # sentence-level pooling is not used: only the word pieces' states are
    if not getattr(tok, "is_fast", False):
        raise ValueError(f"the encoder {spec!r} has no fast tokenizer: the extractive policy needs word ids "
                         "(a tokenizer.json); use a model folder that ships one")
    return model, tok


@dataclass(frozen=True)
class WeightsInfo:
    """What ``extractive.json`` records: enough to rebuild the model the weights belong to."""

    base_model: str
    head_dim: int
    features: tuple[str, ...]
    lora_r: int
    lora_alpha: float
    lora_targets: tuple[str, ...]
    max_length: int

    @classmethod
    def read(cls, folder: Path) -> "WeightsInfo":
        data = json.loads((folder / WEIGHTS_JSON).read_text(encoding="utf-8"))
        if data.get("format") != WEIGHTS_FORMAT:
            raise ValueError(f"{folder / WEIGHTS_JSON} has format {data.get('format')!r}, expected "
                             f"{WEIGHTS_FORMAT!r}; retrain or re-save it with this version of rlpc")
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"{folder} was trained on features {data['features']}, this version computes "
                             f"{list(FEATURES)}; retrain it with this version of rlpc")
        return cls(base_model=data["base_model"], head_dim=int(data["head_dim"]), features=tuple(data["features"]),
                   lora_r=int(data["lora_r"]), lora_alpha=float(data["lora_alpha"]),
                   lora_targets=tuple(data["lora_targets"]), max_length=int(data["max_length"]))

    def write(self, folder: Path) -> None:
        payload = {"format": WEIGHTS_FORMAT, "base_model": self.base_model, "head_dim": self.head_dim,
                   "features": list(self.features), "lora_r": self.lora_r, "lora_alpha": self.lora_alpha,
                   "lora_targets": list(self.lora_targets), "max_length": self.max_length}
        tmp = folder / (WEIGHTS_JSON + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / WEIGHTS_JSON)


def has_weights(folder: Union[str, os.PathLike, None]) -> bool:
    return folder is not None and (Path(folder) / WEIGHTS_JSON).is_file() and (Path(folder) / WEIGHTS_FILE).is_file()


def save_weights(model: Any, info: WeightsInfo, folder: Union[str, os.PathLike]) -> Path:
    """Write the adapter (LoRA update) and the head: never the base encoder, which every user already has."""
    from safetensors.torch import save_file

    from ..lora import lora_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v.contiguous() for k, v in lora_state_dict(model.encoder).items()}
    state.update({f"head.{k}": v.detach().contiguous().clone() for k, v in model.head.state_dict().items()})
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"format": WEIGHTS_FORMAT})
    os.replace(tmp, folder / WEIGHTS_FILE)
    info.write(folder)
    return folder


def load_model(folder: Union[str, os.PathLike], *, merge: bool = True, base_model: Optional[str] = None) -> tuple[Any, Any, WeightsInfo]:
    """``(model, tokenizer, info)`` from a weights folder; ``merge`` folds the adapter into the base (inference).

    With ``merge=False`` the encoder keeps trainable :class:`~rlpc_core.lora.LoRALinear` layers holding the
    saved update (to continue training).
    """
    from ..lora import add_lora, merge_lora

    folder = Path(folder)
    info = WeightsInfo.read(folder)
    encoder, tok = load_encoder(base_model or info.base_model)
    if merge:
        adapter, _ = _split_state(folder)
        merge_lora(encoder, adapter, info.lora_alpha / info.lora_r)
    else:
        add_lora(encoder, info.lora_targets, info.lora_r, info.lora_alpha)
    model = build_model(encoder, n_features=len(info.features), head_dim=info.head_dim)
    if merge:
        model.head.load_state_dict(_split_state(folder)[1])
    else:
        load_weights_into(model, folder)
    return model, tok, info


def _split_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(encoder adapter, head)`` tensors of a weights folder."""
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / WEIGHTS_FILE))
    adapter = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    return adapter, head


def load_weights_into(model: Any, folder: Union[str, os.PathLike]) -> None:
    """Copy a folder's adapter and head into a trainable model (LoRA layers in place): resume, continue."""
    from ..lora import load_lora_state

    adapter, head = _split_state(Path(folder))
    load_lora_state(model.encoder, adapter)
    model.head.load_state_dict(head)


# ---------------------------------------------------------------- the policy

class ExtractivePolicyModel:
    """The ``extractive`` policy: loads its weights on first use and scores words in batched forwards."""

    name = "extractive"

    def __init__(self, config: CompressorConfig, checkpoint: Optional[str] = None) -> None:
        self.config: ExtractiveConfig = config.extractive
        self.graph = config.graph
        self.checkpoint = checkpoint
        self._loaded: Optional[tuple[Any, Any, WeightsInfo]] = None
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """Where the weights are; resolved on use, so a missing folder is a failed compression (which the
        compressor answers with the graph policy, saying why), not a failed construction."""
        return _weights_folder(self.config, self.checkpoint)

    def load(self) -> None:
        """Load the weights now (``Compressor.load``), rather than on the first ``score``."""
        self._load()

    def _load(self) -> tuple[Any, Any, WeightsInfo]:
        with self._lock:
            if self._loaded is None:
                model, tok, info = load_model(self.folder)
                model.eval().requires_grad_(False)
                if self.config.quantize == "int8":
                    import torch

                    # int8 weights for the encoder's linear layers (opt-in: 2.1x faster on CPU, slightly lower
                    # quality; benchmarks/extractive_speed.py); the head stays fp32 (it is tiny)
                    with warnings.catch_warnings():  # torch marks its quantized tensor constructors deprecated
                        warnings.simplefilter("ignore", UserWarning)
                        model.encoder = torch.ao.quantization.quantize_dynamic(model.encoder, {torch.nn.Linear},
                                                                               dtype=torch.qint8)
                self._loaded = (model, tok, info)
            return self._loaded

    def save_pretrained(self, folder: Union[str, os.PathLike]) -> None:
        """Copy the weights next to the checkpoint's rlpc.json, so the folder is self-contained."""
        import shutil

        folder = Path(folder)
        if self.folder.resolve() != folder.resolve():
            folder.mkdir(parents=True, exist_ok=True)
            for name in (WEIGHTS_JSON, WEIGHTS_FILE):
                shutil.copyfile(self.folder / name, folder / name)

    def score(self, words: Sequence[str], *, query: Optional[str] = None) -> WordScores:
        return self.score_batch([words], [query])[0]

    def score_batch(self, docs: Sequence[Sequence[str]], queries: Sequence[Optional[str]]) -> list[WordScores]:
        """Score several texts in shared forward passes: their chunks, sorted by length, fill batches together
        (ten retrieved passages of 150 tokens cost one forward, not ten)."""
        import torch

        model, tok, info = self._load()
        max_length = min(self.config.max_length, info.max_length)
        feats, protected, sentences, encs = [], [], [], []
        n_sent = 0
        for words, query in zip(docs, queries):
            f, p, sent = word_feature_matrix(words, self.graph, query)
            feats.append(f)
            protected.append(p)
            sentences.append(sent + n_sent)  # one sentence numbering over the batch
            n_sent += int(sent.max()) + 1 if len(sent) else 0
            encs.append(encode(tok, words, query, max_length=max_length, query_max_tokens=self.config.query_max_tokens))
        starts = np.concatenate([[0], np.cumsum([len(w) for w in docs])]).astype(np.int64)
        total = int(starts[-1])
        residual = torch.zeros(total, dtype=torch.float32)
        feats_t = torch.from_numpy(np.concatenate(feats) if total else np.zeros((0, len(FEATURES)), np.float32))
        sent_t = torch.from_numpy(np.concatenate(sentences) if total else np.zeros(0, np.int64))
        chunks = [(d, c) for d, e in enumerate(encs) for c in range(e.input_ids.shape[0])]
        chunks.sort(key=lambda dc: int(encs[dc[0]].attention_mask[dc[1]].sum()))  # similar lengths batch together
        bs = self.config.batch_size
        with torch.inference_mode():
            for lo in range(0, len(chunks), bs):
                ids, types, mask, widx = stack_chunks([(encs[d], c, starts[d]) for d, c in chunks[lo:lo + bs]])
                if not (widx >= 0).any():
                    continue
                widx_t = torch.from_numpy(widx)
                out = model.residual(torch.from_numpy(ids), torch.from_numpy(types), torch.from_numpy(mask), feats_t,
                                     widx_t, total)
                seen = torch.unique(widx_t[widx_t >= 0])
                residual[seen] = out[seen]  # each word's pieces sit in one chunk, so in one batch
            logits = model.combine(residual, feats_t, sent_t).double().numpy() if total else np.zeros(0)
        return [WordScores(logits[starts[d]:starts[d + 1]], protected[d]) for d in range(len(docs))]


def stack_chunks(items: Sequence[tuple[EncodedChunks, int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One batch from ``(encoded document, chunk index, word offset)`` items: ids, types, mask and word indices
    (offset into one word numbering over the batch's documents), padded to the batch's longest chunk."""
    width = max(int(e.attention_mask[c].sum()) for e, c, _ in items)
    out = [np.zeros((len(items), width), dtype=np.int64) for _ in range(3)]
    widx = np.full((len(items), width), -1, dtype=np.int64)
    for row, (e, c, offset) in enumerate(items):
        w = min(width, e.input_ids.shape[1])
        out[0][row, :w], out[1][row, :w], out[2][row, :w] = e.input_ids[c, :w], e.token_type_ids[c, :w], e.attention_mask[c, :w]
        wi = e.word_index[c, :w]
        widx[row, :w] = np.where(wi >= 0, wi + offset, -1)
    return out[0], out[1], out[2], widx


def _weights_folder(config: ExtractiveConfig, checkpoint: Optional[str]) -> Path:
    """The checkpoint's own weights when it has them, else ``config.weights`` (``embedded``: the packaged ones)."""
    if checkpoint and has_weights(checkpoint):
        return Path(checkpoint)
    folder = EMBEDDED_WEIGHTS if config.weights == "embedded" else Path(config.weights).expanduser()
    if not has_weights(folder):
        where = "the package's embedded weights" if config.weights == "embedded" else repr(str(folder))
        raise ValueError(f"extractive weights not found in {where} (need {WEIGHTS_JSON} and {WEIGHTS_FILE}); "
                         "train some with python -m training.grpo --recipe minilm-extractive, or pass "
                         "extractive={'weights': FOLDER}")
    return folder


__all__ = ["EMBEDDED_WEIGHTS", "EncodedChunks", "ExtractivePolicyModel", "FEATURES", "WeightsInfo", "build_model",
           "stack_chunks",
           "encode", "has_weights", "load_encoder", "load_model", "load_weights_into", "save_weights",
           "word_feature_matrix"]
