"""One scorer: `ConAD.score`, evaluation's `collect`, both SavedModel signatures and `mhp-predict`
give the same scores, maps and decisions, on whole images and tiled; and `fit_threshold` and
`evaluation.calibrate` pick the same thresholds by the one rule, with and without labels."""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.config.defaults import base_config
from mhp_keras.data.base import ImageSet
from mhp_keras.scoring import evaluation
from mhp_keras.serving.export import write_saved_model
from mhp_keras.serving.predict import predict

# Graph and eager runs of the same model differ by float32 rounding only (scores ~50-150).
ATOL, RTOL = 1e-3, 1e-5
# Image sizes per mode: the tiling model scores 24 x 20 images on 16 x 16 tiles at native size.
MODES = {"whole": ({}, (16, 16)), "tiled": ({"tiling": "tile", "tile_stride": 8}, (24, 20))}


def uint8_images(n, shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *shape, 1), dtype=np.uint8)


def config_for(model):
    config = base_config()
    config.data.image_size = model.image_size
    config.data.channels = model.channels
    config.data.batch_size = 4
    return config


def image_set(paths, labels=None):
    labels = np.zeros(len(paths), np.int32) if labels is None else labels
    return ImageSet(labels=labels, ids=[os.path.basename(p) for p in paths], paths=paths)


@pytest.fixture(scope="module", params=list(MODES))
def scored(request, tmp_path_factory):
    """A calibrated tiny model, its images as PNG files and the four paths' results."""
    overrides, shape = MODES[request.param]
    model = tiny_conad(seed=0, **overrides)
    root = tmp_path_factory.mktemp(request.param)
    images = uint8_images(6, shape)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(root / "images" / f"{i}.png"))
        os.makedirs(os.path.dirname(paths[-1]), exist_ok=True)
        tf.io.write_file(paths[-1], tf.io.encode_png(image))
    floats = images.astype(np.float32) / 255
    scores, maps = model.score(floats)
    # Thresholds between observed values, so that decisions are mixed and no score sits on one.
    pixels = np.sort(np.asarray(maps).reshape(-1))
    pixel_threshold = 0.5 * (pixels[int(0.9 * len(pixels))] + pixels[int(0.9 * len(pixels)) + 1])
    model.set_calibration(np.median(scores), pixel_threshold, 10.0)
    version = write_saved_model(model, str(root / "export" / "1"))
    loaded = tf.saved_model.load(version)
    encoded = tf.constant([tf.io.encode_png(image).numpy() for image in images])
    summary = predict(
        version,
        str(root / "images"),
        str(root / "out"),
        progress=False,
        heatmaps=False,
        masks=False,
        overlays=False,
    )
    with open(summary["scores_csv"]) as f:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(f)}
    return {
        "model": model,
        "score": (scores, maps),
        "collect": evaluation.collect(model, image_set(paths), config_for(model)),
        "pixels": loaded.signatures["serving_default"](images=tf.constant(images)),
        "bytes": loaded.signatures["serving_bytes"](image_bytes=encoded),
        "predict": [rows[f"{i}.png"] for i in range(len(images))],
    }


def assert_masks_agree(mask, amap, other, threshold):
    """Masks agree but where a map pixel lies within rounding of the pixel threshold."""
    differ = np.asarray(mask) != np.asarray(other)
    assert np.all(np.abs(np.asarray(amap)[differ] - threshold) < ATOL)


def test_score_collect_and_saved_model_agree(scored):
    model = scored["model"]
    scores, maps = scored["score"]
    decided = model.decide(scores, maps)
    collected = scored["collect"]
    np.testing.assert_allclose(collected["scores"], scores, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(np.stack(collected["maps"]), maps, atol=ATOL, rtol=RTOL)
    assert 0 < decided["is_anomalous"].sum() < len(scores)
    pixel_threshold = float(model.pixel_threshold.numpy())
    for name in ("pixels", "bytes"):
        out = {key: value.numpy() for key, value in scored[name].items()}
        h, w = maps.shape[1:]
        assert (out["map_size"] == [h, w]).all()
        np.testing.assert_allclose(out["anomaly_score"], scores, atol=ATOL, rtol=RTOL)
        np.testing.assert_allclose(out["anomaly_map"], maps, atol=ATOL, rtol=RTOL)
        np.testing.assert_array_equal(out["is_anomalous"], decided["is_anomalous"])
        np.testing.assert_allclose(out["normalized_score"], decided["normalized_score"], atol=1e-5)
        np.testing.assert_array_equal(out["winner_index"], collected["winners"])
        assert_masks_agree(out["anomaly_mask"], maps, decided["anomaly_mask"], pixel_threshold)


def test_mhp_predict_agrees_with_score(scored):
    model = scored["model"]
    scores, maps = scored["score"]
    decided = model.decide(scores, maps)
    rows = scored["predict"]
    assert all(row["error"] == "" for row in rows)
    got = np.array([float(row["score"]) for row in rows])
    np.testing.assert_allclose(got, scores, atol=ATOL, rtol=RTOL)
    flagged = [row["is_anomalous"] == "true" for row in rows]
    np.testing.assert_array_equal(flagged, decided["is_anomalous"])
    normalized = [float(row["normalized_score"]) for row in rows]
    np.testing.assert_allclose(normalized, decided["normalized_score"], atol=1e-5)
    winners = [int(row["winner_index"]) for row in rows]
    np.testing.assert_array_equal(winners, scored["collect"]["winners"])
    pixels = np.array([int(row["anomalous_pixels"]) for row in rows])
    near = np.abs(maps - float(model.pixel_threshold.numpy())) < ATOL
    counts = decided["anomaly_mask"].reshape(len(rows), -1).sum(1)
    assert np.all(np.abs(pixels - counts) <= near.reshape(len(rows), -1).sum(1))


@pytest.mark.parametrize("labelled", [False, True])
def test_fit_threshold_and_calibrate_use_one_rule(tmp_path, labelled):
    model = tiny_conad(seed=0)
    images = uint8_images(8, (16, 16), seed=1)
    paths = [str(tmp_path / f"{i}.png") for i in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        tf.io.write_file(path, tf.io.encode_png(image))
    labels = np.array([0, 1] * 4, np.int32) if labelled else None
    values, source = evaluation.calibrate(model, image_set(paths, labels), config_for(model))
    assert source.startswith("F1-optimal") == labelled
    threshold = model.fit_threshold(images.astype(np.float32) / 255, labels=labels)
    assert threshold == pytest.approx(values["threshold"], rel=1e-6)
    assert float(model.pixel_threshold.numpy()) == pytest.approx(
        values["pixel_threshold"], rel=1e-6
    )
    assert float(model.score_scale.numpy()) == pytest.approx(values["score_scale"], rel=1e-5)
    if not labelled:  # the config's quantile of the normal scores
        scores, _ = model.score(images.astype(np.float32) / 255)
        quantile = base_config().eval.threshold_quantile
        assert threshold == pytest.approx(np.quantile(scores, quantile), rel=1e-6)
