"""Training on random native-resolution tiles (`data.tiles_per_image`), at the scoring scale
(`score.tile_scale`), `data.crop=auto`, and the examples-per-second callback: each checked against
numpy slices of the images, closed forms or a fake clock."""

import logging

import numpy as np
import pytest
import tensorflow as tf

from mhp_keras.config.defaults import base_config
from mhp_keras.config.model_settings import conad_arguments
from mhp_keras.data import training_tiles
from mhp_keras.data.base import ImageSet
from mhp_keras.data.pipeline import dataset_for_split, make_dataset
from mhp_keras.errors import ConfigError
from mhp_keras.training import callbacks as cb


def image_set(images):
    n = len(images)
    return ImageSet(labels=np.zeros(n), ids=[str(i) for i in range(n)], images=images)


def numbered(n, height, width):
    """Images whose pixels are all different, so a tile tells where it was cut."""
    values = np.arange(n * height * width, dtype=np.float64) / (n * height * width)
    return values.reshape(n, height, width, 1).astype(np.float32)


def training_tiles_of(images, epochs=1, **kwargs):
    """`epochs` passes of one repeated training iterator, as `stream.repeated` runs it."""
    kwargs = {"channels": 1, "image_size": 8, "batch_size": 5, "training": True} | kwargs
    ds = make_dataset(image_set(images), crop="tile", **kwargs)
    steps = int(ds.cardinality())
    if steps < 1:  # every tile: the length is not known, so the dataset stays finite
        return [np.concatenate([b.numpy() for b in ds]) for _ in range(epochs)]
    it = iter(ds.repeat())
    return [np.concatenate([next(it).numpy() for _ in range(steps)]) for _ in range(epochs)]


def origin_of(tile, images):
    """(image, top, left) where `tile` was cut from, found by brute force (None if nowhere)."""
    size = tile.shape[0]
    for i, image in enumerate(images):
        for y in range(image.shape[0] - size + 1):
            for x in range(image.shape[1] - size + 1):
                if np.array_equal(image[y : y + size, x : x + size], tile):
                    return i, y, x
    return None


def test_each_epoch_draws_fresh_native_tiles_of_every_image():
    images = numbered(3, 20, 27)
    first, second = training_tiles_of(images, epochs=2, tiles_per_image=4, seed=1)
    assert first.shape == second.shape == (12, 8, 8, 1)  # 4 per image, whatever its size
    for epoch in (first, second):
        found = [origin_of(tile, images) for tile in epoch]
        assert None not in found  # native pixels, uncut and unresized
        assert sorted(i for i, _, _ in found) == [0] * 4 + [1] * 4 + [2] * 4
    assert not np.array_equal(first, second)  # fresh tiles each epoch
    # Reproducible from the seed, epoch after epoch; another seed draws other tiles.
    again = training_tiles_of(images, epochs=2, tiles_per_image=4, seed=1)
    np.testing.assert_array_equal(again[0], first)
    np.testing.assert_array_equal(again[1], second)
    other = training_tiles_of(images, tiles_per_image=4, seed=2)[0]
    assert not np.array_equal(np.sort(other, axis=None), np.sort(first, axis=None))


def test_tile_origins_are_uniform_over_every_position():
    image = tf.constant(numbered(1, 12, 10)[0])
    draw = tf.function(training_tiles.sample_tiles)  # traced, as in the tf.data pipeline
    tiles = draw(image, 8, 3000, tf.constant([5, 0], tf.int64)).numpy()
    # 5 x 3 valid origins; each tile's top-left pixel value gives its origin.
    corners = np.round(tiles[:, 0, 0, 0] * 120).astype(int)
    counts = np.bincount(corners // 10 * 3 + corners % 10, minlength=15)
    assert counts.size == 15 and counts.min() > 0
    # Multinomial counts of 3000 / 15 = 200 each: sd = sqrt(200 * 14 / 15) ~ 13.7; 5 sd apart.
    assert np.abs(counts - 200).max() < 70


def test_an_image_smaller_than_a_tile_is_padded_by_reflection_as_scoring_pads():
    small = numbered(1, 5, 6)
    (tiles,) = training_tiles_of(small, tiles_per_image=2, seed=0)
    expected = np.pad(small[0], [(0, 3), (0, 2), (0, 0)], mode="symmetric")
    for tile in tiles:
        np.testing.assert_array_equal(tile, expected)


@pytest.mark.parametrize("tiles_per_image", [0, 3])
def test_training_tiles_are_cut_at_score_tile_scale(tiles_per_image):
    images = np.random.default_rng(0).random((2, 32, 48, 1)).astype(np.float32)
    (tiles,) = training_tiles_of(images, tiles_per_image=tiles_per_image, tile_scale=0.5)
    # The scorer's scaling: round(side x scale), bilinear, antialiased, clipped.
    scaled = np.clip(tf.image.resize(images, [16, 24], antialias=True).numpy(), 0, 1)
    assert tiles.shape[0] == (6 if tiles_per_image else 12)  # 2 x 3 tiles of 8 per image
    for tile in tiles:
        assert origin_of(tile, scaled) is not None


def test_validation_data_ignores_the_training_tiles():
    config = base_config()
    config.data.image_size = 16
    images = image_set(np.random.default_rng(1).random((3, 40, 40, 1)).astype(np.float32))
    plain = [row["image"] for row in dataset_for_split(images, config, training=False)]
    config.data.crop, config.data.tiles_per_image, config.score.tile_scale = "tile", 4, 0.5
    for _ in range(2):
        rows = [row["image"] for row in dataset_for_split(images, config, training=False)]
        np.testing.assert_array_equal(np.concatenate(rows), np.concatenate(plain))


def validation_passes(images, passes=2, **data):
    config = base_config()
    config.data.image_size, config.data.channels, config.data.batch_size = 8, 1, 5
    for key, value in data.items():
        setattr(config.data, key, value)
    ds = dataset_for_split(image_set(images), config, training=True, validation=True)
    return [np.concatenate([b.numpy() for b in ds]) for _ in range(passes)]


def test_the_validation_loss_sees_native_tiles_the_same_every_epoch_in_file_order():
    images = numbered(3, 20, 27)
    first, second = validation_passes(images, crop="tile", tiles_per_image=4)
    assert first.shape == (12, 8, 8, 1)  # cut as training cuts: 4 native tiles per image
    np.testing.assert_array_equal(first, second)  # drawn once
    found = [origin_of(tile, images) for tile in first]
    assert None not in found  # native pixels: the scale the model trains at
    assert [i for i, _, _ in found] == [0] * 4 + [1] * 4 + [2] * 4  # unshuffled


def test_the_validation_loss_sees_whole_images_when_training_does():
    images = numbered(2, 8, 8)
    first, second = validation_passes(images, crop="none")
    np.testing.assert_array_equal(first, images)
    np.testing.assert_array_equal(second, images)


@pytest.mark.parametrize("value", [-1, 1.5, True, "4"])
def test_bad_tiles_per_image_names_the_key(value):
    with pytest.raises(ConfigError, match=r"config\.data\.tiles_per_image=.*integer >= 0"):
        make_dataset(
            image_set(numbered(1, 8, 8)),
            channels=1,
            image_size=8,
            batch_size=1,
            training=True,
            crop="tile",
            tiles_per_image=value,
        )


@pytest.mark.parametrize(
    ("side", "scale", "choice"), [(64, 1.0, "tile"), (63, 1.0, "none"), (128, 0.5, "tile")]
)
def test_crop_auto_tiles_from_twice_the_tile_size(side, scale, choice):
    images = image_set(np.zeros((2, side, side + 40, 1), np.float32))
    got, reason = training_tiles.choose_crop(images, 32, scale)
    assert got == choice
    assert f"median short side of 2 training image(s) is {side} px" in reason
    assert "2 x data.image_size = 64 px" in reason


def test_crop_auto_reads_the_median_from_file_headers(tmp_path, caplog):
    from PIL import Image

    paths = []
    for i, (w, h) in enumerate([(300, 90), (200, 140), (50, 400), (500, 120), (20, 20)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("L", (w, h)).save(paths[-1])
    (tmp_path / "bad.png").write_bytes(b"not an image")
    paths.append(str(tmp_path / "bad.png"))  # unreadable: left out of the median
    images = ImageSet(labels=np.zeros(6), ids=list("abcdef"), paths=paths)
    np.testing.assert_array_equal(
        np.sort(training_tiles.short_sides(images)), [20, 50, 90, 120, 140]
    )
    config = base_config()
    config.data.image_size, config.data.crop = 32, "auto"
    # The absl logger's own level may have been raised by an earlier run's quiet logs.
    with caplog.at_level(logging.INFO, logger="absl"):
        resolved = training_tiles.resolve_crop(config, images)
    assert resolved.data.crop == "tile" and config.data.crop == "auto"  # 90 >= 64
    assert "data.crop=auto: tile" in caplog.text and "is 90 px" in caplog.text
    # score.tiling=auto follows the resolved choice.
    assert conad_arguments(resolved)["tiling"] == "tile"
    config.data.image_size = 64  # 90 < 128
    assert conad_arguments(training_tiles.resolve_crop(config, images))["tiling"] == "none"


def test_throughput_logs_examples_per_second(monkeypatch):
    clock = iter([10.0, 10.5, 11.0, 12.0, 13.0, 20.0, 20.25, 20.5])
    monkeypatch.setattr(cb.time, "perf_counter", lambda: next(clock))
    callback = cb.Throughput(batch_size=8)
    logs = {}
    callback.on_epoch_begin(0)
    for step in range(3):  # ends at 10.5, 11.0, 12.0
        callback.on_train_batch_end(step)
    callback.on_epoch_end(0, logs)
    assert logs["examples_per_sec"] == pytest.approx(3 * 8 / 2.0)
    assert logs["epoch_seconds"] == pytest.approx(3.0)  # with validation, after the last step
    known = cb.Throughput(batch_size=8, examples_per_epoch=5)
    known.on_epoch_begin(0)
    known.on_train_batch_end(0)
    known.on_epoch_end(0, logs)
    assert logs["examples_per_sec"] == pytest.approx(5 / 0.25)
    assert logs["epoch_seconds"] == pytest.approx(0.5)


def test_examples_per_epoch_of_each_crop():
    config = base_config()
    images = image_set(np.zeros((7, 8, 8, 1), np.float32))
    assert training_tiles.examples_per_epoch(config, images) == 7
    config.data.crop = "tile"
    assert training_tiles.examples_per_epoch(config, images) is None  # every tile: not known
    config.data.tiles_per_image = 3
    assert training_tiles.examples_per_epoch(config, images) == 21
