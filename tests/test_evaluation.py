"""Threshold choice (a quantile of normal validation scores, or F1-optimal with labelled ones) and
the test metrics, including a test split of normal images only."""

import math

import numpy as np
import pytest

from mhp_keras.data import load_data
from mhp_keras.models import build_conad
from mhp_keras.scoring import metrics
from mhp_keras.scoring.evaluation import NO_ANOMALIES, calibrate, collect, compute_metrics


@pytest.fixture
def model_and_data(tiny_config):
    config = tiny_config()
    model = build_conad(config)
    model.compile()
    return model, load_data(config), config


def test_normal_validation_gives_the_quantile(model_and_data):
    model, data, config = model_and_data
    values, source = calibrate(model, data.val, config)
    threshold = values["threshold"]
    scores = collect(model, data.val, config)["scores"]
    assert source == "validation quantile 0.99"
    assert threshold == pytest.approx(np.quantile(scores, 0.99), rel=1e-6)


def test_labelled_validation_gives_the_f1_optimum(model_and_data):
    model, data, config = model_and_data
    labelled = data.test.subset(np.arange(0, len(data.test), 5))
    assert set(labelled.labels) == {0, 1}
    values, source = calibrate(model, labelled, config)
    threshold = values["threshold"]
    result = collect(model, labelled, config)
    assert source.startswith("F1-optimal")
    assert threshold == metrics.f1_optimal_threshold(result["labels"], result["scores"])


def scored(labels, scores, masks=None, maps=None):
    """What `collect` returns, for hand-made scores (two heads, every image won by head 0)."""
    return {
        "labels": np.asarray(labels, np.int32),
        "scores": np.asarray(scores, np.float32),
        "winners": np.zeros(len(labels), np.int64),
        "masks": masks,
        "maps": maps,
    }


def test_metrics_of_normal_images_only_give_their_score_distribution():
    out = compute_metrics(scored([0] * 5, [1.0, 2.0, 3.0, 4.0, 5.0]), 4.5, hypotheses=2)
    assert math.isnan(out["image_auroc"]) and math.isnan(out["image_ap"])
    assert out["image_auroc_note"] == NO_ANOMALIES
    assert (out["n_test"], out["n_anomalous"], out["threshold"]) == (5, 0, 4.5)
    normal = out["normal_scores"]
    assert (normal["n"], normal["min"], normal["median"], normal["max"]) == (5, 1.0, 3.0, 5.0)
    assert normal["flagged_fraction"] == pytest.approx(0.2)
    assert out["at_threshold"]["fpr"] == pytest.approx(0.2)
    assert out["winner_histogram"] == [1.0, 0.0]


def test_metrics_with_anomalies_keep_the_normal_score_distribution():
    # Normal scores 1 and 2, anomalous 3: perfectly separated.
    masks = np.zeros((3, 2, 2), np.float32)
    masks[2, 0, 0] = 1.0
    maps = masks + 0.1
    out = compute_metrics(scored([0, 0, 1], [1.0, 2.0, 3.0], masks, maps), 2.5, hypotheses=2)
    assert out["image_auroc"] == 1.0 and out["pixel_auroc"] == 1.0
    assert "image_auroc_note" not in out
    assert out["normal_scores"]["n"] == 2 and out["normal_scores"]["flagged_fraction"] == 0.0
