"""Tiled inference: the stitching against brute-force numpy, edges and tiny images, a defect found
at native resolution, the SavedModel agreeing with `model.score`, and bad tile settings."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.config.defaults import base_config
from mhp_keras.config.validation import validate_config
from mhp_keras.errors import ConfigError
from mhp_keras.scoring import tiling
from mhp_keras.serving.export import METADATA_FILE, write_saved_model

ATOL, RTOL = 1e-4, 1e-5


def numpy_tiles(height, width, tile, stride):
    """Tile origins of the grid that covers the image (the far edge padded), as tiling does."""

    def starts(length):
        n = 1 + -(-max(length - tile, 0) // stride)
        return [i * stride for i in range(n)]

    return [(y, x) for y in starts(height) for x in starts(width)]


def numpy_window(tile):
    """The blending window written out from its closed form (tiling's module docstring)."""
    t = np.arange(tile) + 0.5
    return 0.01 + 0.99 * np.sin(np.pi * t / tile) ** 2


def numpy_pad(image, size_h, size_w):
    """Symmetric reflection to at least size_h x size_w, repeated while the image is too small."""
    padded = image
    while padded.shape[0] < size_h or padded.shape[1] < size_w:
        pad_h = min(size_h - padded.shape[0], padded.shape[0])
        pad_w = min(size_w - padded.shape[1], padded.shape[1])
        padded = np.pad(padded, [(0, pad_h), (0, pad_w), (0, 0)], mode="symmetric")
    return padded[:size_h, :size_w]


def numpy_blend(height, width, tile, stride, tile_output, weights=None):
    """Brute force: sum(w * out) / sum(w) over the covering tiles, `tile_output(y, x)` being the
    [tile, tile] output of the tile at origin (y, x) and w the separable window (or `weights`:
    all ones is the plain average)."""
    origins = numpy_tiles(height, width, tile, stride)
    size_h, size_w = origins[-1][0] + tile, origins[-1][1] + tile
    if weights is None:
        weights = np.outer(numpy_window(tile), numpy_window(tile))
    total, norm = np.zeros((size_h, size_w)), np.zeros((size_h, size_w))
    for y, x in origins:
        total[y : y + tile, x : x + tile] += weights * tile_output(y, x)
        norm[y : y + tile, x : x + tile] += weights
    return (total / norm)[:height, :width]


@pytest.mark.parametrize(
    ("height", "width", "tile", "stride"),
    [(64, 64, 16, 16), (37, 50, 16, 8), (100, 33, 32, 16), (10, 7, 16, 4), (16, 16, 16, 8)],
)
def test_stitched_outputs_are_the_window_weighted_average_over_covering_tiles(
    height, width, tile, stride
):
    # Each tile's output is its own mean, so overlapping tiles disagree and the weights matter
    # (this test used to expect the plain average; the stitching now blends with the window).
    rng = np.random.default_rng(0)
    image = rng.random((height, width, 2)).astype(np.float32)
    origins = numpy_tiles(height, width, tile, stride)

    def fn(tiles):
        n = tf.shape(tiles)[0]
        value = tf.reduce_mean(tiles, axis=[1, 2, 3])[:, None, None]
        return {
            "map": tf.broadcast_to(value, tf.stack([n, tile, tile])),
            "copy": tiles,
            "votes": tf.ones([n, 1]),
        }

    out = tiling.tiled_apply(tf.constant(image), fn, tile, stride, {"map": [], "copy": [2]}, 1)
    padded = numpy_pad(image, origins[-1][0] + tile, origins[-1][1] + tile)

    def tile_mean(y, x):
        return np.full((tile, tile), padded[y : y + tile, x : x + tile].mean())

    expected = numpy_blend(height, width, tile, stride, tile_mean)
    np.testing.assert_allclose(out["map"].numpy(), expected, rtol=1e-5, atol=1e-6)
    # Any weighted average of equal values is that value: the image comes back exactly.
    np.testing.assert_allclose(out["copy"].numpy(), image, rtol=1e-6, atol=1e-6)
    assert out["votes"].numpy().tolist() == [len(origins)]
    if stride == tile:  # one tile per pixel: the weights cancel, the tile's own value is kept
        means = {o: padded[o[0] : o[0] + tile, o[1] : o[1] + tile].mean() for o in origins}
        plain = np.zeros((height, width))
        for (y, x), mean in means.items():
            plain[y : y + tile, x : x + tile] = mean
        np.testing.assert_allclose(out["map"].numpy(), plain, rtol=1e-5, atol=1e-6)


def test_stitching_with_edge_errors_shows_no_tile_grid():
    """A per-tile function that is exact inside the tile and off by ERR within BAND pixels of
    the tile's edges, as a real model reconstructs worst where its convolutions meet padding.
    Averaged, every pixel within BAND of some tile's edge is off by ERR / 2 or more: the grid's
    lines. Blended, the error is the edge tiles' share of the window, a few per cent of ERR."""
    tile, stride, band, err = 32, 16, 2, 1.0
    height, width = 150, 170  # 9 x 10 tiles: many tile boundaries inside the image
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:height, 0:width]
    field = np.sin(yy / 23.0) + np.cos(xx / 31.0) + 0.1 * rng.random((height, width))
    local = np.arange(tile)
    in_band = (local < band) | (local >= tile - band)
    edge = np.maximum(in_band[:, None], in_band[None, :]).astype(np.float32)  # [T, T]

    def fn(tiles):
        return {"map": tiles[..., 0] + err * edge, "votes": tf.ones([tf.shape(tiles)[0], 1])}

    image = tf.constant(field[..., None].astype(np.float32))
    stitched = tiling.tiled_apply(image, fn, tile, stride, {"map": []}, 1)["map"].numpy()
    padded = numpy_pad(field[..., None], 160 + tile, 176 + tile)[..., 0]

    def tile_output(y, x):
        return padded[y : y + tile, x : x + tile] + err * edge

    np.testing.assert_allclose(
        stitched, numpy_blend(height, width, tile, stride, tile_output), rtol=1e-5, atol=1e-5
    )
    residual = (stitched - field)[tile:-tile, tile:-tile]  # away from the image's own border
    # The worst interior pixel is `band - 1` from one tile's edge along an axis (closed form of
    # the window) and possibly along both: at most 1 - (1 - r)^2 of err.
    w = numpy_window(tile)
    r = w[band - 1] / (w[band - 1] + w[band - 1 + stride])
    assert r < 0.05
    assert residual.max() <= err * (1 - (1 - r) ** 2) + 1e-5
    assert residual.min() >= -1e-5
    # The largest step between neighbouring pixels, of which a grid line has two, stays below
    # that bound too, where the plain average steps by err / 2 at every line.
    steps = max(np.abs(np.diff(residual, axis=0)).max(), np.abs(np.diff(residual, axis=1)).max())
    assert steps <= err * (1 - (1 - r) ** 2) + 1e-5
    averaged = numpy_blend(height, width, tile, stride, tile_output, np.ones((tile, tile)))
    plain_residual = (averaged - field)[tile:-tile, tile:-tile]
    assert np.abs(np.diff(plain_residual, axis=1)).max() >= err / 2 - 1e-6


def test_tiling_traces_for_any_image_size():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 1], tf.float32)])
    def stitched(image):
        def fn(tiles):
            return {"map": tiles[..., 0], "votes": tf.ones([tf.shape(tiles)[0], 1])}

        return tiling.tiled_apply(image, fn, 16, 8, {"map": []}, 1)["map"]

    for shape in [(16, 16, 1), (45, 23, 1), (5, 70, 1)]:
        image = np.random.default_rng(1).random(shape).astype(np.float32)
        np.testing.assert_allclose(stitched(tf.constant(image)).numpy(), image[..., 0], atol=1e-6)


def normal_surface(height, width, seed):
    """A smooth grey surface with fine noise: what a tiny model learns in a few hundred steps."""
    rng = np.random.default_rng(seed)
    return (0.5 + 0.02 * rng.standard_normal((height, width, 1))).astype(np.float32)


@pytest.fixture(scope="module")
def surface_model():
    """A tiny tiling model trained on 16 x 16 tiles of normal surfaces."""
    model = tiny_conad(seed=0, tiling="tile", adv_weight=0.0, hypotheses=2)
    tiles = np.concatenate([normal_surface(16, 16, seed)[None] for seed in range(256)], axis=0)
    model.fit(tiles, batch_size=32, epochs=25, verbose=0, shuffle=True)
    return model


def test_a_small_defect_is_the_stitched_maximum(surface_model):
    # 64 x 64 = 4 x 4 tiles of 16 at stride 16, 7 x 7 at the default stride of 8.
    image = normal_surface(64, 64, seed=1000)
    image[37:40, 22:25] = 1.0  # a bright 3 x 3 defect, across a tile border at stride 16
    scores, maps = surface_model.score([image])
    assert maps.shape == (1, 64, 64)
    y, x = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert 37 <= y < 40 and 22 <= x < 25
    clean_scores, _ = surface_model.score([normal_surface(64, 64, seed=1001)])
    assert scores[0] > clean_scores[0]


def test_sizes_that_do_not_divide_into_tiles_keep_their_size(surface_model):
    images = [normal_surface(50, 37, 5), normal_surface(9, 70, 6)]
    images[0][45:48, 33:36] = 1.0  # a defect in the padded far corner
    scores, maps = surface_model.score(images)
    assert [m.shape for m in maps] == [(50, 37), (9, 70)]
    assert np.isfinite(scores).all()
    y, x = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    assert 45 <= y < 48 and 33 <= x < 36


def test_savedmodel_tiles_in_the_graph_like_model_score(surface_model, tmp_path):
    model = surface_model
    normal = [normal_surface(40, 56, seed) for seed in range(2000, 2004)]
    model.fit_threshold(normal, quantile=0.5)
    path = write_saved_model(model, str(tmp_path / "export"))
    loaded = tf.saved_model.load(path)
    with open(os.path.join(path, METADATA_FILE)) as f:
        meta = json.load(f)
    assert meta["tiling"] == "tile" and meta["tile_stride"] == 8

    image = normal_surface(40, 56, seed=3000)
    image[10:13, 30:33] = 1.0
    uint8 = np.round(image * 255).astype(np.uint8)
    out = loaded.signatures["serving_default"](images=tf.constant(uint8[None]))
    scores, maps = model.score([uint8.astype(np.float32) / 255])
    np.testing.assert_allclose(out["anomaly_score"].numpy(), scores, atol=ATOL, rtol=RTOL)
    np.testing.assert_allclose(out["anomaly_map"].numpy(), maps, atol=ATOL, rtol=RTOL)
    assert out["map_size"].numpy().tolist() == [[40, 56]]

    # Encoded images of different sizes in one request: each scored at its own size.
    small = np.round(normal_surface(20, 30, seed=3001) * 255).astype(np.uint8)
    encoded = [tf.io.encode_png(uint8).numpy(), tf.io.encode_png(small).numpy()]
    out = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded))
    assert out["anomaly_map"].shape == (2, 40, 56)
    assert out["map_size"].numpy().tolist() == [[40, 56], [20, 30]]
    _, small_maps = model.score([small.astype(np.float32) / 255])
    # Decoding scales by 1/255 where the test divides by 255: one ulp apart, which the NLL's
    # 1/variance (up to e^6 here) magnifies; maps still agree to a few parts in a thousand.
    np.testing.assert_allclose(
        out["anomaly_map"][1, :20, :30].numpy(), small_maps[0], rtol=5e-3, atol=5e-3
    )
    assert not out["anomaly_map"][1, 20:].numpy().any()  # the padding is zero


def test_tile_scale_scores_a_shrunk_image_and_returns_native_maps():
    model = tiny_conad(seed=2, tiling="tile", tile_scale=0.5)
    image = normal_surface(64, 48, seed=7)
    scores, maps = model.score([image])
    assert maps.shape == (1, 64, 48) and np.isfinite(scores).all()


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("tile_stride", 0, "config.score.tile_stride=0"),
        ("tile_stride", 5, "config.score.tile_stride=5"),
        ("tile_stride", 32, "config.score.tile_stride=32"),
        ("tile_scale", 0.0, "config.score.tile_scale=0.0"),
        ("tiling", "tiles", "config.score.tiling='tiles'"),
    ],
)
def test_bad_tile_settings_name_the_key(key, value, match):
    config = base_config()
    config.score[key] = value
    with pytest.raises(ConfigError, match=match):
        validate_config(config)


def test_auto_tiling_follows_the_training_crop():
    from mhp_keras.config.model_settings import conad_arguments

    config = base_config()
    assert conad_arguments(config)["tiling"] == "none"
    config.data.crop = "tile"
    assert conad_arguments(config)["tiling"] == "tile"
    config.score.tiling = "none"
    assert conad_arguments(config)["tiling"] == "none"


def write_surface(path, height, width, seed, defect=None):
    """A grey noise surface PNG; `defect` = (top, left, side) paints a bright square and writes
    its mask beside the MVTec layout's ground truth."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = np.clip(128 + 6 * rng.standard_normal((height, width)), 0, 255).astype(np.uint8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if defect is not None:
        top, left, side = defect
        image[top : top + side, left : left + side] = 255
        mask = np.zeros((height, width), np.uint8)
        mask[top : top + side, left : left + side] = 255
        mask_path = path.replace("/test/", "/ground_truth/").replace(".png", "_mask.png")
        os.makedirs(os.path.dirname(mask_path), exist_ok=True)
        Image.fromarray(mask).save(mask_path)
    Image.fromarray(image).save(path)


@pytest.mark.slow
def test_train_and_evaluate_on_tiles_at_native_resolution(tmp_path, tiny_config):
    from mhp_keras.training.experiment import run

    root = tmp_path / "data" / "plate"
    for i in range(8):
        write_surface(str(root / "train/good" / f"{i}.png"), 48, 64, seed=i)
    for i in range(3):
        write_surface(str(root / "test/good" / f"{i}.png"), 40 + 8 * i, 56, seed=100 + i)
    for i in range(3):
        defect = (5 + 7 * i, 9 + 5 * i, 4)
        write_surface(str(root / "test/spot" / f"{i}.png"), 48, 48 + 8 * i, 200 + i, defect)
    # crop=auto resolves to tile (short sides of 48 >= 2 x 16) and score.tiling=auto follows it;
    # each epoch draws 5 random tiles of each of the 6 training images.
    config = tiny_config(**{"data.name": "mvtec", "data.crop": "auto", "eval.report": True})
    config.data.tiles_per_image = 5
    config.data.root = str(tmp_path / "data")
    config.data.category = "plate"
    config.data.val_fraction = 0.25
    config.score.aggregate = "topk"
    metrics = run(config, str(tmp_path / "run"))
    assert metrics["n_test"] == 6 and metrics["n_anomalous"] == 3
    for key in ("image_auroc", "pixel_auroc", "aupro", "pixel_f1", "pixel_iou"):
        assert key in metrics and metrics[key] is not None
    assert np.isfinite(metrics["pixel_threshold"])
    rows = (tmp_path / "run" / "scores.csv").read_text().splitlines()
    assert rows[0] == "id,label,score,predicted,normalized_score" and len(rows) == 7
    for row in rows[1:]:
        predicted, normalized = int(row.split(",")[3]), float(row.split(",")[4])
        assert (normalized >= 0.5) == bool(predicted)
    assert os.path.isfile(tmp_path / "run" / "report" / "examples.png")
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("examples_per_sec")
    assert len(history) == 3 and all(float(r.split(",")[column]) > 0 for r in history[1:])
    # The export tiles too: a native-size test image through the SavedModel.
    export = tf.saved_model.load(metrics["export"])
    from PIL import Image

    image = np.asarray(Image.open(root / "test/spot/2.png"))[None, ..., None]
    out = export.signatures["serving_default"](images=tf.constant(image))
    assert out["anomaly_map"].shape == (1, 48, 64)
