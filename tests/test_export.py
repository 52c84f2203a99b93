"""The TF Serving export: signatures, parity with `model.score`, input checks, atomic versions."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.data.pipeline import resize_image
from mhp_keras.errors import ConfigError, UserError
from mhp_keras.serving.export import METADATA_FILE, existing_versions, export_saved_model

# Exported and in-process scores are ~100-200 (sums of 256 per-pixel NLLs) and agree to a few
# float32 ulps (measured max |diff| ~3e-5); the required 1e-4 plus a few ulps of headroom.
ATOL, RTOL = 1e-4, 1e-6


def tiny_model(channels=3, hypotheses=2, wta="sample"):
    return tiny_conad(seed=0, channels=channels, hypotheses=hypotheses, wta=wta)


def uint8_images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def encode_png(image):
    return tf.io.encode_png(image).numpy()


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """An RGB model with a threshold between its 2nd and 3rd highest scores, exported once."""
    model = tiny_model()
    images = uint8_images(6, 16, 16, 3)
    scores, _ = model.score(images.astype(np.float32) / 255)
    top = np.sort(scores)
    model.threshold.assign(float((top[-2] + top[-3]) / 2))
    base = str(tmp_path_factory.mktemp("export"))
    path = export_saved_model(model, base)
    loaded = tf.saved_model.load(path)
    return {"model": model, "images": images, "base": base, "path": path, "loaded": loaded}


def test_layout_and_metadata(rgb):
    assert rgb["path"] == os.path.join(rgb["base"], "conad", "1")
    assert os.path.isfile(os.path.join(rgb["path"], "saved_model.pb"))
    with open(os.path.join(rgb["path"], METADATA_FILE)) as f:
        meta = json.load(f)
    model = rgb["model"]
    assert meta["image_size"] == 16 and meta["channels"] == 3 and meta["hypotheses"] == 2
    assert meta["threshold"] == pytest.approx(float(model.threshold.numpy()))
    assert meta["score_aggregate"] == model.score_aggregate
    assert meta["mhp_keras_version"] and meta["version"] == 1


def test_saved_model_cli_lists_both_signatures(rgb):
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), "show", "--all"]
        + ["--dir", rgb["path"]],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name", text, re.DOTALL))
    assert {"serving_default", "serving_bytes"} <= set(blocks)

    def tensor(block, kind, name):
        m = re.search(rf"{kind}\['{name}'\] tensor_info:\s*dtype: (\w+)\s*shape: (.*)", block)
        assert m, f"{kind} {name} missing from:\n{block}"
        return m.group(1), m.group(2).strip()

    assert tensor(blocks["serving_default"], "inputs", "images") == ("DT_UINT8", "(-1, -1, -1, 3)")
    assert tensor(blocks["serving_bytes"], "inputs", "image_bytes") == ("DT_STRING", "(-1)")
    for block in (blocks["serving_default"], blocks["serving_bytes"]):
        assert tensor(block, "outputs", "anomaly_score") == ("DT_FLOAT", "(-1)")
        assert tensor(block, "outputs", "anomaly_map") == ("DT_FLOAT", "(-1, 16, 16)")
        assert tensor(block, "outputs", "is_anomalous") == ("DT_BOOL", "(-1)")
        assert tensor(block, "outputs", "best_hypothesis") == ("DT_FLOAT", "(-1, 16, 16, 3)")
        assert tensor(block, "outputs", "winner_index") == ("DT_INT32", "(-1)")


def test_scores_match_model_score(rgb):
    model, images = rgb["model"], rgb["images"]
    out = rgb["loaded"].signatures["serving_default"](images=tf.constant(images))
    scores, maps = model.score(images.astype(np.float32) / 255)
    np.testing.assert_allclose(out["anomaly_score"].numpy(), scores, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(out["anomaly_map"].numpy(), maps, atol=ATOL, rtol=RTOL)
    threshold = float(model.threshold.numpy())
    expected = scores >= threshold
    assert expected.sum() == 2  # the threshold lies between two scores, far from ulp noise
    np.testing.assert_array_equal(out["is_anomalous"].numpy(), expected)
    analysis = model.analyze(tf.constant(images, tf.float32) / 255)
    np.testing.assert_array_equal(out["winner_index"].numpy(), analysis["winner_index"].numpy())
    np.testing.assert_allclose(
        out["best_hypothesis"].numpy(), analysis["best_hypothesis"].numpy(), atol=1e-5
    )


def test_other_sizes_are_resized_in_graph_like_the_pipeline(rgb):
    model = rgb["model"]
    images = uint8_images(3, 24, 20, 3, seed=1)
    out = rgb["loaded"].signatures["serving_default"](images=tf.constant(images))
    floats = tf.image.convert_image_dtype(images, tf.float32)
    # Letterboxed (the default) as the pipeline does: 24 x 20 lands as 16 x 13, padded.
    letterboxed = resize_image(floats, 16).numpy()
    assert np.all(letterboxed[:, :, 13:] == 0.0)
    scores, maps = model.score(floats.numpy())
    # Same ops on the same floats, in a graph instead of eagerly: same tolerance as at 16x16.
    np.testing.assert_allclose(out["anomaly_score"].numpy(), scores, atol=ATOL, rtol=RTOL)
    np.testing.assert_array_equal(out["map_size"].numpy(), [[16, 13]] * 3)
    assert maps.shape == (3, 16, 13)
    np.testing.assert_allclose(out["anomaly_map"].numpy()[:, :, :13], maps, atol=1e-4)


def test_bytes_signature_matches_uint8_signature(rgb):
    loaded, images = rgb["loaded"], rgb["images"]
    big = uint8_images(1, 24, 20, 3, seed=2)
    batch = [encode_png(im) for im in images] + [encode_png(big[0])]
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(batch))
    ref = loaded.signatures["serving_default"](images=tf.constant(images))
    ref_big = loaded.signatures["serving_default"](images=tf.constant(big))
    expected = np.concatenate([ref["anomaly_score"].numpy(), ref_big["anomaly_score"].numpy()])
    # Batches of other sizes sum in another order: a few ulps, as in the other comparisons.
    np.testing.assert_allclose(out["anomaly_score"].numpy(), expected, atol=ATOL, rtol=RTOL)
    np.testing.assert_array_equal(out["is_anomalous"].numpy()[:-1], ref["is_anomalous"].numpy())
    assert out["anomaly_map"].shape == (7, 16, 16)
    assert out["best_hypothesis"].shape == (7, 16, 16, 3)
    # A grey PNG is converted to RGB like the training pipeline does (grey repeated).
    grey = images[:1, :, :, :1]
    out_grey = loaded.signatures["serving_bytes"](image_bytes=tf.constant([encode_png(grey[0])]))
    ref_grey = loaded.signatures["serving_default"](images=tf.constant(np.repeat(grey, 3, -1)))
    np.testing.assert_allclose(
        out_grey["anomaly_score"].numpy(), ref_grey["anomaly_score"].numpy(), atol=ATOL, rtol=RTOL
    )


@pytest.mark.parametrize("shape", [(2, 16, 16, 1), (2, 16, 16, 4), (16, 16, 3), (1, 2, 16, 16, 3)])
def test_wrong_rank_or_channels_is_a_clear_error(rgb, shape):
    signature = rgb["loaded"].signatures["serving_default"]
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=re.escape("expected images shaped [batch, height, width, 3] uint8"),
    ):
        signature(images=tf.zeros(shape, tf.uint8))


def test_float_input_is_rejected_by_the_signature(rgb):
    signature = rgb["loaded"].signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a uint8 tensor"):
        signature(images=tf.zeros([1, 16, 16, 3], tf.float32))


def test_undecodable_bytes_fail(rgb):
    signature = rgb["loaded"].signatures["serving_bytes"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape("image_bytes[0] could not")):
        signature(image_bytes=tf.constant([b"not an image"]))


def test_pixel_wta_exports_majority_winner_and_unset_threshold(tmp_path):
    model = tiny_model(channels=1, hypotheses=3, wta="pixel")
    images = uint8_images(4, 16, 16, 1, seed=3)
    path = export_saved_model(model, str(tmp_path), model_name="grey")
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    scores, _ = model.score(images.astype(np.float32) / 255)
    np.testing.assert_allclose(out["anomaly_score"].numpy(), scores, atol=ATOL, rtol=RTOL)
    per_pixel = model.analyze(tf.constant(images, tf.float32) / 255)["winner_index"].numpy()
    counts = np.stack([(per_pixel == k).sum(axis=(1, 2)) for k in range(3)], axis=1)
    np.testing.assert_array_equal(out["winner_index"].numpy(), counts.argmax(axis=1))
    assert not out["is_anomalous"].numpy().any()  # threshold still +inf
    with open(os.path.join(path, METADATA_FILE)) as f:
        assert json.load(f)["threshold"] is None


def test_versions_increment_and_are_never_overwritten(rgb, tmp_path):
    model = rgb["model"]
    base = str(tmp_path)
    assert export_saved_model(model, base).endswith(os.path.join("conad", "1"))
    assert export_saved_model(model, base).endswith(os.path.join("conad", "2"))
    assert export_saved_model(model, base, version=7).endswith(os.path.join("conad", "7"))
    assert export_saved_model(model, base).endswith(os.path.join("conad", "8"))
    with pytest.raises(UserError, match="already exists"):
        export_saved_model(model, base, version=2)
    path = export_saved_model(model, base, version=2, overwrite=True)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    model_dir = os.path.join(base, "conad")
    assert existing_versions(model_dir) == [1, 2, 7, 8]
    assert sorted(os.listdir(model_dir)) == ["1", "2", "7", "8"]  # no temporaries left


def test_interrupted_export_leaves_no_partial_version(rgb, tmp_path, monkeypatch):
    model, base = rgb["model"], str(tmp_path)
    first = export_saved_model(model, base)
    before = sorted(os.listdir(first))

    def crash(obj, export_dir, *args, **kwargs):
        with open(os.path.join(export_dir, "saved_model.pb"), "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(tf.saved_model, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        export_saved_model(model, base)
    model_dir = os.path.join(base, "conad")
    assert os.listdir(model_dir) == ["1"]
    assert sorted(os.listdir(first)) == before
    monkeypatch.undo()
    loaded = tf.saved_model.load(first)
    out = loaded.signatures["serving_default"](images=tf.constant(rgb["images"]))
    assert out["anomaly_score"].shape == (6,)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"version": 0}, "version=0"),
        ({"version": "3"}, "version='3'"),
        ({"model_name": "a/b"}, "model_name='a/b'"),
        ({"model_name": ""}, "model_name=''"),
    ],
)
def test_bad_export_arguments(rgb, tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        export_saved_model(rgb["model"], str(tmp_path), **kwargs)
    assert not os.path.exists(os.path.join(str(tmp_path), "conad"))


def test_keras_export_of_a_never_called_model_then_with_a_threshold(tmp_path):
    model = tiny_conad(seed=1, channels=3)
    images = uint8_images(5, 16, 16, 3, seed=2)
    path = model.export(str(tmp_path / "fresh"), verbose=False)  # no call, no fit before
    loaded = tf.saved_model.load(path)
    assert {"serving_default", "serving_bytes"} <= set(loaded.signatures)
    out = loaded.signatures["serving_default"](images=tf.constant(images))
    assert not out["is_anomalous"].numpy().any()  # no threshold yet: +inf

    normal = images.astype(np.float32) / 255
    threshold = model.fit_threshold(normal, quantile=0.5)
    scores, _ = model.score(normal)
    assert threshold == pytest.approx(float(np.quantile(scores.astype(np.float64), 0.5)))
    path = model.export(str(tmp_path / "thresholded"), verbose=False)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(out["anomaly_score"].numpy(), scores, atol=ATOL, rtol=RTOL)
    assert out["is_anomalous"].numpy().tolist() == (scores >= threshold).tolist()
    with open(os.path.join(path, METADATA_FILE)) as f:
        assert json.load(f)["threshold"] == pytest.approx(threshold)
