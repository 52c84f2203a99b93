"""Training on native-resolution tiles: random tiles per image and epoch, and `data.crop=auto`.

With `data.crop=tile` every tile of every training image used to be one training example, so an
epoch's cost grew with the images' area (a 2,000 px photo alone is about 1,000 tiles of 64).
`data.tiles_per_image=k` (> 0) instead draws k tiles per image and epoch, at uniformly random
origins, from the cached decoded image: an epoch costs k tiles per image whatever the images'
size, and over the epochs the tiles still cover every part of every image. The draws are
stateless, keyed on the seed and a per-element, per-epoch random number
(`tf.data.Dataset.random(rerandomize_each_iteration=True)`, as `data.crop=random` does), so a run
is reproducible from `seed` and each epoch sees fresh tiles.

`data.crop=auto` chooses between tiling and resizing from the training images' sizes, read from
the arrays or from the files' headers (no decoding): tiles when the median short side, after
`score.tile_scale`, is at least `AUTO_TILE_FACTOR` x `data.image_size` (a photo at least two tiles
across in both directions, where resizing would shrink a defect at least twofold), else whole
images resized. The choice is logged with its numbers, and `train` resolves it before the model is
built, so `score.tiling=auto` follows it.
"""

from __future__ import annotations

import copy

import numpy as np
import tensorflow as tf
from absl import logging

from mhp_keras.data.base import ImageSet
from mhp_keras.data.image_files import image_size as header_size
from mhp_keras.errors import ConfigError, DataError
from mhp_keras.scoring.tiling import pad_to_grid

AUTO = "auto"
# crop=auto tiles when the median short side (after score.tile_scale) is >= this x image_size.
AUTO_TILE_FACTOR = 2
# Headers read for crop=auto: evenly spaced over the training files, enough for a median.
AUTO_SAMPLE = 101


def check_tiles_per_image(value) -> int:
    """`data.tiles_per_image` as an int >= 0, or a ConfigError naming the key."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ConfigError(
            f"config.data.tiles_per_image={value!r}: expected an integer >= 0 (random tiles per "
            "training image and epoch with data.crop=tile; 0 = every tile of every image)."
        )
    return int(value)


def pad_to_tile(image: tf.Tensor, size: int) -> tf.Tensor:
    """[h, w, C] padded at the bottom and right to at least size x size by symmetric reflection,
    as tiled scoring pads an image smaller than a tile (a stride of 1 pads to max(side, size))."""
    return pad_to_grid(image, size, 1)


def sample_tiles(image: tf.Tensor, size: int, count: int, seed: tf.Tensor) -> tf.Tensor:
    """`count` size x size tiles [count, size, size, C] of one image (at least size x size), at
    origins drawn uniformly over every valid position from the stateless `seed` (shape [2])."""
    shape = tf.shape(image)
    positions = tf.cast(tf.stack([shape[0] - size + 1, shape[1] - size + 1]), tf.float32)
    draws = tf.random.stateless_uniform([count, 2], seed=seed)
    # floor(u * n) is uniform over 0..n-1; the minimum guards u * n rounding up to n.
    origins = tf.minimum(tf.cast(draws * positions, tf.int32), tf.cast(positions, tf.int32) - 1)
    return tf.map_fn(
        lambda o: tf.slice(image, tf.stack([o[0], o[1], 0]), tf.stack([size, size, shape[2]])),
        origins,
        fn_output_signature=tf.TensorSpec([size, size, image.shape[-1]], image.dtype),
    )


def sampled_tiles(ds: tf.data.Dataset, size: int, count: int, seed: int, images: int):
    """Cached training images (each at least size x size) -> `count` fresh random tiles of each
    per epoch, one example each; the length (images x count) is declared, so training can run
    on one repeated iterator."""
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def tiles(image, r):
        return sample_tiles(image, size, count, tf.stack([r, tf.constant(seed, tf.int64)]))

    ds = tf.data.Dataset.zip((ds, draws)).map(tiles, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.unbatch().apply(tf.data.experimental.assert_cardinality(images * count))


def short_sides(images: ImageSet, limit: int = AUTO_SAMPLE) -> np.ndarray:
    """Short sides in pixels of up to `limit` training images, evenly spaced over the set: from
    the array's shape, or from each file's header (unreadable files are left out)."""
    if images.images is not None:
        return np.full(len(images), min(images.images.shape[1:3]))  # one size for all
    picked = np.unique(np.linspace(0, len(images.paths) - 1, min(limit, len(images.paths))))
    sides = []
    for i in picked.astype(int):
        try:
            sides.append(min(header_size(images.paths[i])))
        except OSError:
            continue
    if not sides:
        raise DataError(
            f"data.crop=auto: none of the {len(picked)} training files it looked at (e.g. "
            f"{images.paths[0]}) has a readable image header; set data.crop=tile or none."
        )
    return np.asarray(sides)


def choose_crop(images: ImageSet, image_size: int, tile_scale: float) -> tuple[str, str]:
    """("tile" or "none", the reason with its numbers) for `data.crop=auto`."""
    sides = short_sides(images)
    median = float(np.median(sides)) * tile_scale
    need = AUTO_TILE_FACTOR * image_size
    choice = "tile" if median >= need else "none"
    relation = ">=" if choice == "tile" else "<"
    what = "tiles at native resolution" if choice == "tile" else "whole images resized"
    reason = (
        f"data.crop=auto: {choice} ({what}): the median short side of {len(sides)} training "
        f"image(s) is {float(np.median(sides)):g} px, x score.tile_scale {tile_scale:g} = "
        f"{median:g} px {relation} {AUTO_TILE_FACTOR} x data.image_size = {need} px"
    )
    return choice, reason


def resolve_crop(config, images: ImageSet):
    """The config itself, or for `data.crop=auto` a copy with the chosen crop (logged at INFO),
    so the pipeline and `score.tiling=auto` (`model_settings.conad_arguments`) both follow it."""
    if config.data.crop != AUTO:
        return config
    choice, reason = choose_crop(images, config.data.image_size, config.score.tile_scale)
    logging.info("%s.", reason)
    resolved = copy.deepcopy(config)
    resolved.data.crop = choice
    return resolved


def examples_per_epoch(config, images: ImageSet) -> int | None:
    """Training examples in one epoch of a resolved config, when known without reading the
    images: every image once, or `data.tiles_per_image` tiles of each; None for every tile."""
    if config.data.crop == "tile":
        return len(images) * config.data.tiles_per_image or None
    return len(images)
