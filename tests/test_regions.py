"""Fair image scores across sizes, letterboxing and the region of interest (issue 21, 2 and 4).

The mean top-k score does not grow with the image's area; letterboxed images keep their aspect
and their padding is never scored; pixels outside the region of interest count in neither the
image score nor the pixel metrics; the automatic frame is found where it is; a fixed mask gives
clear errors and travels with the model into `model.keras` and the SavedModel."""

import math

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad
from scipy import ndimage, stats

import mhp_keras
from mhp_keras.config.defaults import base_config
from mhp_keras.config.model_settings import upgrade_saved_config
from mhp_keras.data.pipeline import resize_image, resize_mask
from mhp_keras.errors import ConfigError
from mhp_keras.models.conad import build_conad
from mhp_keras.scoring import metrics, regions, reports
from mhp_keras.serving.export import write_saved_model
from mhp_keras.training import losses


def framed(content: np.ndarray, widths, level=0.05, rng=None) -> np.ndarray:
    """`content` [h, w] inside a dark noisy frame of (top, bottom, left, right) pixels."""
    rng = rng or np.random.default_rng(0)
    top, bottom, left, right = widths
    image = content.copy()
    frame = np.zeros(image.shape, bool)
    h, w = image.shape
    frame[:top], frame[h - bottom :], frame[:, :left], frame[:, w - right :] = (True,) * 4
    image[frame] = np.clip(level + rng.normal(0.0, 0.01, frame.sum()), 0.0, 1.0)
    return image


def texture(shape, seed=0) -> np.ndarray:
    """A stationary texture in [0, 1]: smoothed white noise, rescaled."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.5)
    return ((noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


# -- aggregation --------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.3, 1.0])
def test_topk_is_the_mean_and_topk_sum_the_sum_of_the_top_fraction(fraction):
    amap = np.random.default_rng(1).normal(size=(3, 8, 8)).astype(np.float32)
    k = max(1, math.ceil(64 * fraction))
    top = np.sort(amap.reshape(3, -1), axis=1)[:, -k:]
    got_mean = losses.aggregate_map(amap, "topk", fraction).numpy()
    got_sum = losses.aggregate_map(amap, "topk_sum", fraction).numpy()
    np.testing.assert_allclose(got_mean, top.mean(1), rtol=1e-5)
    np.testing.assert_allclose(got_sum, top.sum(1), rtol=1e-5)


@pytest.mark.parametrize("method", ["sum", "mean", "topk", "topk_sum"])
def test_a_region_aggregates_its_own_pixels_only(method):
    rng = np.random.default_rng(2)
    amap = rng.normal(size=(4, 10, 12)).astype(np.float32)
    region = rng.random((4, 10, 12)) < 0.4
    region[:, 0, 0] = True
    got = losses.aggregate_map(amap, method, 0.2, region).numpy()
    # Changing the outside changes nothing.
    wild = np.where(region, amap, 1e6 * rng.random(amap.shape)).astype(np.float32)
    np.testing.assert_array_equal(losses.aggregate_map(wild, method, 0.2, region).numpy(), got)
    for i in range(4):
        inside = np.sort(amap[i][region[i]])
        k = max(1, math.ceil(inside.size * 0.2))
        expected = {
            "sum": inside.sum(),
            "mean": inside.mean(),
            "topk": inside[-k:].mean(),
            "topk_sum": inside[-k:].sum(),
        }[method]
        np.testing.assert_allclose(got[i], expected, rtol=1e-5)


def test_topk_compares_images_of_different_sizes_on_tiles_and_topk_sum_does_not():
    """Good crops of one stationary texture, 32 and 96 px a side, scored on 16 px tiles: the
    mean top 10 % has the same distribution for both sizes, the sum grows with the area (9x)."""
    source = texture((400, 400))
    rng = np.random.default_rng(3)

    def crops(side, n):
        corners = rng.integers(0, 400 - side, (n, 2))
        return [source[r : r + side, c : c + side, None] for r, c in corners]

    small, large = crops(32, 12), crops(96, 12)
    medians = {}
    for aggregate in ("topk", "topk_sum"):
        model = tiny_conad(seed=0, tiling="tile", tile_stride=8, score_aggregate=aggregate)
        a, b = model.score(small)[0], model.score(large)[0]
        medians[aggregate] = np.median(b) / np.median(a)
        p_value = stats.mannwhitneyu(a, b).pvalue
        if aggregate == "topk":
            assert abs(medians[aggregate] - 1.0) < 0.1 and p_value > 0.01
        else:
            assert medians[aggregate] > 5.0 and p_value < 1e-3
    assert medians["topk_sum"] / medians["topk"] == pytest.approx(9.0, rel=0.15)


def test_models_saved_before_the_mean_topk_keep_the_sum_and_squash():
    old = {"score_aggregate": "topk", "topk_fraction": 0.1}
    upgraded = {
        "score_aggregate": "topk_sum",
        "resize": "squash",
        "adv_balance": "fixed",
        "adv_sources": "every",
    }
    assert upgrade_saved_config(old) == old | upgraded
    assert upgrade_saved_config({"score_aggregate": "sum"})["resize"] == "squash"
    new = tiny_conad(score_aggregate="topk").get_config()
    assert upgrade_saved_config(new) == new  # a new save keeps the mean and letterboxing
    loaded = mhp_keras.models.ConAD.from_config(dict(new, resize="squash") | {"roi": "none"})
    assert loaded.score_aggregate == "topk"


# -- letterboxing -------------------------------------------------------------------------------


def test_letterbox_keeps_the_aspect_and_pads_the_bottom_and_right():
    image = tf.constant(np.random.default_rng(4).random((20, 40, 1)), tf.float32)
    boxed = resize_image(image, 16, "letterbox").numpy()
    assert boxed.shape == (16, 16, 1)
    np.testing.assert_allclose(boxed[:8], resize_image(image, 16, "squash").numpy()[::2], atol=0.3)
    assert np.all(boxed[8:] == 0.0) and boxed[:8].std() > 0
    mask = resize_mask(tf.ones((20, 40, 1)), 16, "letterbox").numpy()[..., 0]
    assert mask[:8].all() and not mask[8:].any()
    square = tf.constant(np.random.default_rng(5).random((2, 40, 40, 1)), tf.float32)
    np.testing.assert_array_equal(
        resize_image(square, 16, "letterbox").numpy(), resize_image(square, 16, "squash").numpy()
    )


def test_letterboxed_maps_have_the_images_aspect_and_ignore_the_padding():
    model = tiny_conad(seed=0, score_aggregate="mean")
    images = np.random.default_rng(6).random((3, 24, 48, 1)).astype(np.float32)
    scores, maps = model.score(images)
    assert maps.shape == (3, 8, 16)
    out = model.scorer.run(images)
    np.testing.assert_array_equal(out["map_size"], [[8, 16]] * 3)
    raw = model.analyze(resize_image(images, 16, "letterbox"))["raw_map"].numpy()
    np.testing.assert_allclose(scores, raw[:, :8, :16].mean((1, 2)), rtol=1e-5)
    squash = tiny_conad(seed=0, score_aggregate="mean", resize="squash")
    assert squash.score(images)[1].shape == (3, 16, 16)
    square = images[:, :24, :24]
    # Square images fill their square: letterboxing scores them as squashing did (up to the
    # float rounding of another trace: `model` was traced for other shapes above).
    np.testing.assert_allclose(squash.score(square)[0], model.score(square)[0], rtol=1e-6)
    fresh = tiny_conad(seed=0, score_aggregate="mean")
    np.testing.assert_array_equal(squash.score(square)[0], fresh.score(square)[0])


# -- the automatic frame ------------------------------------------------------------------------


def test_the_auto_frame_is_found_within_a_pixel_whatever_its_width():
    rng = np.random.default_rng(7)
    for _ in range(20):
        widths = tuple(int(w) for w in rng.integers(0, 12, 4))
        image = framed(texture((64, 64), seed=int(rng.integers(1000))), widths, rng=rng)
        region = regions.frame_region(tf.constant(image[..., None]), 0).numpy()
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        found = (rows[0], 63 - rows[-1], cols[0], 63 - cols[-1])
        assert np.abs(np.subtract(found, widths)).max() <= 1, (found, widths)
        with_margin = regions.frame_region(tf.constant(image[..., None]), 2).numpy()
        assert with_margin.sum() < region.sum() and (with_margin <= region).all()


def test_the_auto_frame_on_the_textures_set_with_frames():
    from mhp_keras.data import load_data

    config = base_config()
    config.data.update(name="textures", image_size=16, patch_size=48, train_patches=24)
    config.data.update(test_patches=4, val_fraction=0.25)
    plain = load_data(config).train.images[..., 0]
    config.data.frame_border = 0.15
    images = load_data(config).train.images[..., 0]
    for before, after in zip(plain, images, strict=True):
        frame = before != after  # the frame's pixels, and nothing else
        widths = (
            int(frame.all(1).cumprod().sum()),
            int(frame.all(1)[::-1].cumprod().sum()),
            int(frame.all(0).cumprod().sum()),
            int(frame.all(0)[::-1].cumprod().sum()),
        )
        region = regions.frame_region(tf.constant(after[..., None]), 0).numpy()
        rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
        found = (rows[0], 47 - rows[-1], cols[0], 47 - cols[-1])
        assert np.abs(np.subtract(found, widths)).max() <= 2, (found, widths)


def test_an_image_that_is_all_frame_counts_every_pixel():
    flat = tf.fill([10, 12, 1], 0.3)
    assert regions.region_of(flat, "auto", None, 2).numpy().all()


# -- the region in scores, maps and metrics ------------------------------------------------------


def roi_model(mask=None, **overrides):
    mask = np.pad(np.ones((10, 12)), ((3, 3), (2, 2))) if mask is None else mask
    return tiny_conad(seed=0, roi="mask", roi_mask=mask, score_aggregate="topk", **overrides)


def test_the_score_and_map_leave_out_what_lies_outside_the_mask():
    model = roi_model()
    images = np.random.default_rng(8).random((4, 16, 16, 1)).astype(np.float32)
    scores, maps = model.score(images)
    inside = np.pad(np.ones((10, 12), bool), ((3, 3), (2, 2)))
    assert np.isnan(maps[:, ~inside]).all() and np.isfinite(maps[:, inside]).all()
    raw = model.analyze(images)["raw_map"].numpy()
    k = math.ceil(0.1 * inside.sum())
    expected = np.sort(raw[:, inside], axis=1)[:, -k:].mean(1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    # A mask of a different size is resized to each image (nearest neighbour).
    big = np.kron(np.pad(np.ones((10, 12)), ((3, 3), (2, 2))), np.ones((4, 4)))
    np.testing.assert_allclose(roi_model(big).score(images)[0], scores, rtol=1e-6)


def test_pixel_metrics_ignore_the_outside():
    rng = np.random.default_rng(9)
    maps = rng.random((3, 12, 12))
    truth = maps + 0.3 * rng.random((3, 12, 12)) > 0.9
    outside = np.zeros((12, 12), bool)
    outside[:, :3] = True
    scored = np.where(outside, np.nan, maps)
    other_truth = truth.copy()
    other_truth[:, outside] = rng.random((3, outside.sum())) > 0.5  # changed outside only
    inside = [m[~outside] for m in maps]
    inside_truth = [t[~outside] for t in truth]
    for name, fn in [
        ("auroc", metrics.pixel_auroc),
        ("aupro", metrics.aupro),
        ("f1", lambda t, m: metrics.pixel_decisions(t, m, 0.8)["pixel_f1"]),
    ]:
        got = fn(truth, scored)
        assert fn(other_truth, scored) == pytest.approx(got), name
        assert np.isfinite(got), name
    flat_truth, flat_maps = np.concatenate(inside_truth), np.concatenate(inside)
    from sklearn.metrics import roc_auc_score

    assert metrics.pixel_auroc(truth, scored) == pytest.approx(roc_auc_score(flat_truth, flat_maps))
    # AUPRO of the inside pixels: the outside columns cut away, the same regions
    cut = metrics.aupro(truth[:, :, 3:], maps[:, :, 3:])
    assert metrics.aupro(truth, scored) == pytest.approx(cut)


def test_bad_masks_name_the_file_and_the_key(tmp_path):
    missing = str(tmp_path / "none.png")
    with pytest.raises(ConfigError, match=r"data.roi_mask=.*none.png.*no such file"):
        roi_model(missing)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image")
    with pytest.raises(ConfigError, match=r"data.roi_mask=.*garbage.png.*could not be read"):
        roi_model(str(garbage))
    black = tmp_path / "black.png"
    tf.io.write_file(str(black), tf.io.encode_png(tf.zeros((8, 8, 1), tf.uint8)))
    with pytest.raises(ConfigError, match=r"data.roi_mask=.*black.png.*no white pixel"):
        roi_model(str(black))
    config = base_config()
    config.score.roi = "mask"
    with pytest.raises(ValueError, match="roi='mask'"):
        build_conad(config)  # mask without data.roi_mask


def test_the_mask_travels_with_the_model_and_its_export(tmp_path):
    path = tmp_path / "roi.png"
    mask = np.zeros((32, 32, 1), np.uint8)
    mask[4:28, 8:30] = 255
    tf.io.write_file(str(path), tf.io.encode_png(mask))
    config = base_config()
    config.data.update(image_size=16, roi_mask=str(path))
    config.model.update(hypotheses=2, latent_dim=4, base_filters=8, disc_base_filters=8)
    config.score.roi = "mask"
    model = build_conad(config)
    path.unlink()  # the model no longer needs the file
    images = np.random.default_rng(10).integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    scores, maps = model.score(images.astype(np.float32) / 255)
    model.save(str(tmp_path / "model.keras"))
    loaded = mhp_keras.load_model(str(tmp_path / "model.keras"))
    np.testing.assert_array_equal(loaded.score(images.astype(np.float32) / 255)[0], scores)
    served = tf.saved_model.load(write_saved_model(model, str(tmp_path / "export" / "1")))
    out = served.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(out["anomaly_score"].numpy(), scores, rtol=1e-5)
    np.testing.assert_array_equal(np.isnan(out["anomaly_map"].numpy()), np.isnan(maps))
    assert not out["anomaly_mask"].numpy()[np.isnan(maps)].any()


def test_the_report_dims_the_outside_and_outlines_the_region():
    image = np.full((6, 8, 1), 0.8)
    heat = np.ones((6, 8, 3)) * 0.5
    outside = np.zeros((6, 8), bool)
    outside[:, :3] = True
    picture = reports.overlay(image, heat, outside=outside)
    np.testing.assert_allclose(picture[outside], reports.OUTSIDE_DIM * 0.8)
    np.testing.assert_allclose(picture[:, 3], np.tile(reports.REGION_EDGE, (6, 1)))
    np.testing.assert_allclose(picture[:, 4:], 0.5 * 0.8 + 0.5 * 0.5)


def test_evaluation_on_framed_textures_scores_and_measures_inside_the_auto_region():
    """Tiled scoring of the textures set with frames of random width (`data.frame_border`): the
    maps are NaN exactly outside each image's auto region, the scores aggregate the inside, and
    the pixel metrics equal those of the inside pixels alone, whatever the masks say outside."""
    from mhp_keras.data import load_data
    from mhp_keras.scoring import evaluation

    config = base_config()
    config.data.update(name="textures", image_size=16, patch_size=48, frame_border=0.15)
    config.data.update(train_patches=4, test_patches=8, val_fraction=0.25, batch_size=4)
    data = load_data(config)
    model = tiny_conad(seed=0, tiling="tile", tile_stride=8, roi="auto", score_aggregate="topk")
    result = evaluation.collect(model, data.test, config)
    for image, amap in zip(data.test.images, result["maps"], strict=True):
        region = regions.frame_region(tf.constant(image), model.roi_margin).numpy()
        np.testing.assert_array_equal(np.isnan(amap), ~region)
        assert (~region).any()  # every test patch here has some frame
    masks = np.asarray(result["masks"]) > 0.5
    outside = np.isnan(result["maps"])
    flipped = np.where(outside, ~masks, masks)
    inside = (masks[~outside][None], np.asarray(result["maps"])[~outside][None])
    expected = metrics.pixel_auroc(*inside)  # one row of the inside pixels
    got = evaluation.compute_metrics(result, 0.0, model.hypotheses)
    assert got["pixel_auroc"] == pytest.approx(expected)
    changed = evaluation.compute_metrics(result | {"masks": flipped}, 0.0, model.hypotheses)
    assert changed["pixel_auroc"] == pytest.approx(got["pixel_auroc"])
    assert changed["aupro"] == pytest.approx(got["aupro"])


@pytest.mark.parametrize("mode", ["letterbox", "squash"])
def test_training_images_are_placed_as_data_resize_says(mode):
    from mhp_keras.data.base import ImageSet
    from mhp_keras.data.pipeline import make_dataset

    wide = np.random.default_rng(0).random((2, 8, 16, 1)).astype(np.float32)
    images = ImageSet(images=wide, labels=np.zeros(2, np.int64), ids=["a", "b"])
    kwargs = dict(channels=1, image_size=8, batch_size=2, seed=0, resize=mode)
    batch = next(iter(make_dataset(images, training=True, **kwargs)))
    expected = resize_image(tf.constant(wide), 8, mode).numpy()
    # The training shuffle may swap the two images: compare as a set.
    got = sorted(batch.numpy(), key=lambda a: float(a.sum()))
    want = sorted(expected, key=lambda a: float(a.sum()))
    np.testing.assert_allclose(got, want, atol=1e-6)
    if mode == "letterbox":
        assert (batch.numpy()[:, 4:] == 0).all()  # the padding below the 4-row image
