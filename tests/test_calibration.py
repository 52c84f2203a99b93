"""The decisions: normalized_score is monotone with the threshold at exactly 0.5, masks follow the
pixel threshold, the values are picked on normal data, saved, exported, and older saves load."""

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

import mhp_keras
from mhp_keras.scoring import calibration, metrics
from mhp_keras.serving.export import write_saved_model


def test_normalized_score_is_monotone_and_half_exactly_at_the_threshold():
    threshold = 100.0
    below = np.nextafter(np.float32(threshold), np.float32(0))
    scores = np.array([-1e9, 50.0, below, threshold, 100.0001, 1e9], np.float32)
    out = calibration.decisions(scores, np.zeros([1, 2, 2]), threshold, 1.0, 25.0)
    normalized = out["normalized_score"].numpy()
    assert normalized[3] == 0.5
    assert np.all(np.diff(normalized) >= 0) and normalized.min() >= 0.0 and normalized.max() <= 1
    np.testing.assert_array_equal(normalized >= 0.5, out["is_anomalous"].numpy())
    np.testing.assert_array_equal(out["is_anomalous"].numpy(), scores >= threshold)
    assert normalized[2] < 0.5  # a hair below the threshold stays below the midpoint


def test_without_a_threshold_nothing_is_flagged():
    out = calibration.decisions([1e30], np.full([1, 2, 2], 1e30), np.inf, np.inf, 1.0)
    assert out["normalized_score"].numpy()[0] == 0.0
    assert not out["is_anomalous"].numpy().any() and not out["anomaly_mask"].numpy().any()


def test_calibrate_takes_quantiles_of_normal_scores_and_pixels():
    rng = np.random.default_rng(0)
    scores = rng.normal(10, 2, 500)
    maps = rng.random((20, 8, 8))
    values = calibration.calibrate(scores, maps, 0.9, 0.99)
    assert values["threshold"] == pytest.approx(np.quantile(scores, 0.9))
    assert values["pixel_threshold"] == pytest.approx(np.quantile(maps, 0.99))
    assert values["score_scale"] == pytest.approx(values["threshold"] - np.median(scores))


def test_pixel_f1_and_iou_against_hand_counts():
    masks = [np.array([[1, 1], [0, 0]]), np.array([[0, 0, 1]])]
    maps = [np.array([[0.9, 0.2], [0.8, 0.1]]), np.array([[0.1, 0.7, 0.95]])]
    out = metrics.pixel_decisions(masks, maps, 0.5)
    # Predicted: (0,0), (1,0) in image 0; (0,1), (0,2) in image 1 -> tp 2, fp 2, fn 1.
    assert out["pixel_f1"] == pytest.approx(4 / 7)
    assert out["pixel_iou"] == pytest.approx(2 / 5)
    assert out["pixel_precision"] == pytest.approx(0.5)
    assert out["pixel_recall"] == pytest.approx(2 / 3)


def test_fit_threshold_decide_save_and_export_agree(tmp_path):
    model = tiny_conad(seed=3)
    rng = np.random.default_rng(1)
    normal = rng.random((40, 16, 16, 1)).astype(np.float32)
    threshold = model.fit_threshold(normal[:20], quantile=0.75, pixel_quantile=0.95)
    scores, maps = model.score(normal[20:])
    decided = model.decide(scores, maps)
    assert decided["is_anomalous"].tolist() == (scores >= threshold).tolist()
    np.testing.assert_array_equal(decided["normalized_score"] >= 0.5, decided["is_anomalous"])
    pixel_threshold = float(model.pixel_threshold.numpy())
    np.testing.assert_array_equal(decided["anomaly_mask"], maps >= pixel_threshold)

    model.save(str(tmp_path / "m.keras"))
    loaded = mhp_keras.load_model(str(tmp_path / "m.keras"))
    for name in ("threshold", "pixel_threshold", "score_scale"):
        assert float(getattr(loaded, name).numpy()) == float(getattr(model, name).numpy())

    signature = tf.saved_model.load(write_saved_model(model, str(tmp_path / "export")))
    images = np.round(normal[20:] * 255).astype(np.uint8)
    out = signature.signatures["serving_default"](images=tf.constant(images))
    scores, maps = model.score(images.astype(np.float32) / 255)
    np.testing.assert_array_equal(out["is_anomalous"].numpy(), scores >= threshold)
    np.testing.assert_array_equal(
        out["normalized_score"].numpy() >= 0.5, out["is_anomalous"].numpy()
    )
    assert out["is_anomalous"].numpy().any() and not out["is_anomalous"].numpy().all()
    expected_mask = out["anomaly_map"].numpy() >= pixel_threshold
    np.testing.assert_array_equal(out["anomaly_mask"].numpy(), expected_mask)


def test_models_saved_with_the_image_threshold_only_still_load():
    model = tiny_conad(seed=4)
    model.load_own_variables({"0": np.float32(42.0)})  # what older .keras files hold
    assert float(model.threshold.numpy()) == 42.0
    assert float(model.pixel_threshold.numpy()) == np.inf
    assert float(model.score_scale.numpy()) == 1.0
