"""The feedback model (bi-encoder, cross-encoder, the offline fallback) and calibration against agreement."""

import doctest
import logging

import numpy as np
import pytest

import rlpc_core.feedback as feedback_module
from rlpc_core.feedback import DEFAULT_CROSS_ENCODER, FALLBACK_BI_ENCODER, FeedbackModel, calibrate

ORIGINAL = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
            "her friends every day with four. She sells the remainder at the farmers' market for $2 per egg.")
FAITHFUL = "Janet's ducks lay 16 eggs a day. She eats three, bakes with four, sells the rest at $2 per egg."
UNRELATED = "The quarterly revenue of the software division rose by four percent on strong cloud sales."


def test_doctests():
    assert doctest.testmod(feedback_module).failed == 0


def test_bi_encoder_scores_faithful_above_unrelated():
    fm = FeedbackModel("all-minilm-l6-v2")
    scores = fm.score([ORIGINAL] * 4, [FAITHFUL, UNRELATED, "", ORIGINAL])
    assert fm.kind == "bi-encoder" and fm.name == "all-minilm-l6-v2"
    assert scores.dtype == np.float64 and ((0 <= scores) & (scores <= 1)).all()
    assert scores[0] > scores[1] + 0.3
    assert scores[2] == 0.0  # an empty compression kept nothing
    assert scores[3] == pytest.approx(1.0, abs=1e-4)
    assert fm.score([""], [""]).tolist() == [1.0]  # nothing to keep, nothing lost
    assert fm.score([], []).shape == (0,)


def test_cross_encoder_id_falls_back_offline_with_one_warning(monkeypatch, caplog):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable when it is first imported; the test process may have imported it already
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(feedback_module, "_UNAVAILABLE", {})
    with caplog.at_level(logging.WARNING, logger="rlpc_core.feedback"):
        fm = FeedbackModel()
        assert fm.spec == DEFAULT_CROSS_ENCODER and fm.requested_kind == "cross-encoder"
        assert fm.kind == "bi-encoder" and fm.name == FALLBACK_BI_ENCODER
        scores = fm.score([ORIGINAL, ORIGINAL], [FAITHFUL, UNRELATED])
    assert scores[0] > scores[1]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert DEFAULT_CROSS_ENCODER in warnings[0] and FALLBACK_BI_ENCODER in warnings[0]
    assert DEFAULT_CROSS_ENCODER in feedback_module._UNAVAILABLE  # a second instance does not retry the hub


@pytest.fixture(scope="module")
def cross_encoder_folders(tmp_path_factory):
    """Cross-encoders built on the embedded MiniLM with fresh heads: one single-logit, one NLI-style."""
    from sentence_transformers import CrossEncoder

    from rlpc_core.models import resolve

    base = resolve("all-minilm-l6-v2")
    root = tmp_path_factory.mktemp("cross")
    labels = {0: "contradiction", 1: "entailment", 2: "neutral"}
    nli = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}}
    folders = {"single": root / "single", "nli": root / "nli"}
    CrossEncoder(base, num_labels=1).save_pretrained(folders["single"])
    CrossEncoder(base, num_labels=3, config_kwargs=nli).save_pretrained(folders["nli"])
    return folders


def test_cross_encoder_single_logit_is_squashed_by_sigmoid(cross_encoder_folders):
    import torch

    fm = FeedbackModel(cross_encoder_folders["single"])
    scores = fm.score([ORIGINAL, ORIGINAL, ORIGINAL], [FAITHFUL, UNRELATED, ""])
    assert fm.kind == "cross-encoder"
    logits = fm._model.predict([(ORIGINAL, FAITHFUL), (ORIGINAL, UNRELATED)], activation_fn=torch.nn.Identity())
    assert scores[:2] == pytest.approx(1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64))))
    assert scores[2] == 0.0


def test_nli_cross_encoder_scores_entailment_probability(cross_encoder_folders):
    fm = FeedbackModel(cross_encoder_folders["nli"])
    scores = fm.score([ORIGINAL, ORIGINAL], [FAITHFUL, UNRELATED])
    assert fm.kind == "cross-encoder" and fm._entail_index == 1
    assert ((0 < scores) & (scores < 1)).all()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="kind='poly-encoder'"):
        FeedbackModel(kind="poly-encoder")
    with pytest.raises(ValueError, match="batch_size"):
        FeedbackModel(batch_size=0)
    with pytest.raises(ValueError, match="model spec"):
        FeedbackModel("  ")
    assert FeedbackModel("all-minilm-l6-v2").requested_kind == "bi-encoder"
    with pytest.raises(ValueError, match="one compressed text per original"):
        FeedbackModel("all-minilm-l6-v2").score(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="list of str"):
        FeedbackModel("all-minilm-l6-v2").score("a", "b")


# ---------------------------------------------------------------- calibration

def test_calibrate_separable_data():
    rng = np.random.default_rng(0)
    scores = np.r_[rng.uniform(0.0, 0.4, 100), rng.uniform(0.6, 1.0, 100)]
    agreed = np.r_[np.zeros(100, bool), np.ones(100, bool)]
    c = calibrate(scores, agreed)
    assert c.n == 200 and c.base_rate == 0.5
    assert c.auc == 1.0 and c.accuracy == 1.0
    assert 0.4 <= c.threshold <= 0.6
    assert c.slope > 0 and c.brier < 0.05
    assert c.probability([0.1, 0.9]).tolist() == pytest.approx([0.0, 1.0], abs=0.1)
    assert set(c.to_dict()) == {"n", "base_rate", "auc", "slope", "intercept", "brier", "brier_raw", "threshold",
                                "accuracy"}


def test_calibrate_random_data_is_chance():
    rng = np.random.default_rng(1)
    c = calibrate(rng.random(2000), rng.random(2000) < 0.3)
    assert c.auc == pytest.approx(0.5, abs=0.05)
    assert c.brier == pytest.approx(0.3 * 0.7, abs=0.01)  # no better than predicting the base rate
    assert c.accuracy == pytest.approx(0.7, abs=0.03)


def test_calibrate_ties_single_class_and_errors():
    tied = calibrate([0.5] * 4, [1, 0, 1, 1])
    assert tied.auc == 0.5 and tied.slope == 0.0 and tied.accuracy == 0.75
    one_class = calibrate([0.1, 0.9], [True, True])
    assert np.isnan(one_class.auc) and one_class.to_dict()["auc"] is None
    assert calibrate([0.2, 0.8, 0.8, 0.1], [0, 1, 0, 0]).auc == pytest.approx(0.8333, abs=1e-3)
    with pytest.raises(ValueError, match="one outcome per score"):
        calibrate([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="at least one"):
        calibrate([], [])
    with pytest.raises(ValueError, match="NaN"):
        calibrate([float("nan")], [True])
    with pytest.raises(ValueError, match="booleans"):
        calibrate([0.1, 0.2], [0, 2])
