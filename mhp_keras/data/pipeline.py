"""Turns an `ImageSet` into a `tf.data` pipeline: decode -> resize -> scale -> cache -> shuffle ->
batch -> prefetch.

Every loader ends here, so resizing, channel conversion and scaling behave the same for arrays,
image files and tfds data. Elements are dicts with `image` (float32 [S, S, C] in [0, 1]), `label`
(int32, 1 = anomalous), `mask` (float32 [S, S, 1], zeros where the set has no masks) and `id`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from mhp_keras.config.defaults import base_config
from mhp_keras.data import training_tiles
from mhp_keras.data.base import ImageSet
from mhp_keras.data.image_files import decode_on_host, file_needs_host_decoding
from mhp_keras.data.letterbox import fitted_size
from mhp_keras.errors import ConfigError
from mhp_keras.scoring.tiling import scale_image

AUTOTUNE = tf.data.AUTOTUNE
# `make_dataset`'s defaults are the config's, read from the one place they are defined.
_DEFAULTS = base_config()


def convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts a [h, w, c] image with c in {1, 2, 3, 4} to `channels` (1 or 3) channels.

    Alpha is dropped (images are scored on their colour, not their transparency); grey is repeated
    into RGB; RGB becomes grey by the ITU-R 601 luma weights of `tf.image.rgb_to_grayscale`.
    """
    if image.shape[-1] == channels:
        return image
    # Written without tf.cond on shapes so it traces for any (even unknown) channel count.
    c = tf.shape(image)[-1]
    n = tf.where(c >= 3, 3, 1)  # keep RGB or grey, drop alpha
    image = image[..., :n]
    rgb = tf.ensure_shape(tf.tile(image, [1, 1, 3 // n]), [None, None, 3])
    # A grey image stays exactly as it is in a grey dataset (the luma weights sum to 0.9999).
    image = tf.where(n == 1, rgb[..., :1], tf.image.rgb_to_grayscale(rgb)) if channels == 1 else rgb
    return tf.ensure_shape(image, [None, None, channels])


def _decode_on_host(path) -> np.ndarray:
    # tf.numpy_function passes bytes inside tf.data and a 0-d object array when run eagerly.
    return decode_on_host(np.asarray(path).item().decode())[0]


def read_image_file(path: tf.Tensor, on_host: bool | tf.Tensor = False) -> tf.Tensor:
    """Decodes an image file as float32 [h, w, c] in [0, 1], c its own channel count (1 to 4).

    `on_host` (`image_files.needs_host_decoding`; a bool, or a bool tensor per element) picks
    Pillow through `decode_on_host` for what TF cannot decode (TIFF, WebP, palette BMP, ...);
    everything else stays in the graph, with no Python per image. Both scale 8-bit by 1/255 and
    16-bit by 1/65535, so they agree on the same pixels (within float32 rounding).
    """

    def in_graph():
        contents = tf.io.read_file(path)
        return tf.io.decode_image(contents, expand_animations=False, dtype=tf.float32)

    def on_the_host():
        image = tf.numpy_function(_decode_on_host, [path], tf.float32, stateful=False)
        return tf.ensure_shape(image, [None, None, None])

    if isinstance(on_host, bool):  # one decoder for the whole set: no branch in the graph
        return on_the_host() if on_host else in_graph()
    return tf.cond(on_host, on_the_host, in_graph)


def decode_image_file(
    path: tf.Tensor, channels: int, on_host: bool | tf.Tensor = False
) -> tf.Tensor:
    """Reads an image file (see `read_image_file`) as float32 [h, w, channels] in [0, 1]."""
    return convert_channels(read_image_file(path, on_host), channels)


def decode_mask_file(
    path: tf.Tensor, like: tf.Tensor, on_host: bool | tf.Tensor = False
) -> tf.Tensor:
    """Reads a mask image as {0, 1} float32 [h, w, 1]; an empty path means an all-normal mask."""

    def read():
        mask = read_image_file(path, on_host)
        return tf.cast(tf.reduce_max(mask[..., :1], axis=-1, keepdims=True) > 0.5, tf.float32)

    def empty():
        return tf.zeros_like(like[..., :1])

    return tf.cond(tf.equal(tf.strings.length(path), 0), empty, read)


def _host_flags(paths) -> bool | np.ndarray:
    """Which files `read_image_file` decodes on the host: one bool when all agree (the common
    case, which keeps Python out of the graph), else one per file ("" paths: False)."""
    flags = np.array([bool(p) and file_needs_host_decoding(p) for p in paths], dtype=bool)
    return bool(flags[0]) if flags.size and (flags == flags[0]).all() else flags


def resize_image(image: tf.Tensor, size: int, mode: str = _DEFAULTS.data.resize) -> tf.Tensor:
    """Bilinear, antialiased resize of [h, w, C] or [B, h, w, C] into [size, size], clipped back
    into [0, 1]: "letterbox" keeps the aspect (long side to size, zeros at the bottom and right,
    `mhp_keras.data.letterbox`), "squash" stretches both sides."""
    fitted = [size, size] if mode == "squash" else fitted_size(tf.shape(image)[-3:-1], size, mode)
    image = tf.image.resize(image, fitted, method="bilinear", antialias=True)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return image if mode == "squash" else tf.image.pad_to_bounding_box(image, 0, 0, size, size)


def resize_mask(mask: tf.Tensor, size: int, mode: str = _DEFAULTS.data.resize) -> tf.Tensor:
    """Nearest-neighbour resize, so masks stay exactly {0, 1}; placed as `resize_image` places
    the image."""
    if mode == "squash":
        return tf.image.resize(mask, [size, size], method="nearest")
    mask = tf.image.resize(mask, fitted_size(tf.shape(mask)[-3:-1], size, mode), method="nearest")
    return tf.image.pad_to_bounding_box(mask, 0, 0, size, size)


def _source(
    images: ImageSet, channels: int, size: int, fit=resize_image, resize=_DEFAULTS.data.resize
) -> tf.data.Dataset:
    """Decoded, resized elements before caching; `fit` sizes the image (see training crops) and
    masks are placed as `resize` places whole images."""
    n = len(images)
    columns = {
        "label": images.labels.astype(np.int32),
        "id": np.asarray(images.ids, dtype=object).astype(str),
    }
    if images.images is not None:
        columns["image"] = images.images.astype(np.float32)
    else:
        columns["path"] = np.asarray(images.paths, dtype=str)
    if images.masks is not None:
        columns["mask"] = images.masks.astype(np.float32)
    elif images.mask_paths is not None:
        columns["mask_path"] = np.asarray(images.mask_paths, dtype=str)
    host = {k: _host_flags(columns[k]) for k in ("path", "mask_path") if k in columns}
    columns.update({f"{k}_on_host": v for k, v in host.items() if isinstance(v, np.ndarray)})
    if n == 0:
        raise ValueError("cannot build a pipeline from an empty ImageSet")
    ds = tf.data.Dataset.from_tensor_slices(columns)

    def prepare(row):
        def on_host(key):
            return row.get(f"{key}_on_host", host.get(key))

        if "image" in row:
            image = convert_channels(row["image"], channels)
        else:
            image = decode_image_file(row["path"], channels, on_host("path"))
        if "mask" in row:
            mask = row["mask"]
        elif "mask_path" in row:
            mask = decode_mask_file(row["mask_path"], image, on_host("mask_path"))
        else:
            mask = tf.zeros_like(image[..., :1])
        return {
            "image": image if fit is None else fit(image, size),
            "label": row["label"],
            # At native size (fit=None) the mask keeps its image's size, else the model's.
            "mask": mask if fit is None else resize_mask(mask, size, resize),
            "id": row["id"],
        }

    return ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)


# --- Training crops and tiles (data.crop) -------------------------------------------------------
# For images larger than image_size. They apply to training batches (and to the validation loss's,
# `validation=True`) only: scoring takes whole images, resized to image_size or tiled by the
# scorer (score.tiling), as with data.crop="none".
#
# "random": every epoch, each training image contributes one random square crop whose side is
#   `crop_fraction` (data.crop_fraction) of the image's short side, resized to image_size.
#   Implemented as an aspect-preserving resize of the short side to image_size / crop_fraction
#   (cached once), followed by a fresh random image_size x image_size crop per epoch, which gives
#   the same pixels as cropping first and resizing after, without re-decoding files every epoch.
# "tile": each training image, scaled by score.tile_scale (the scale tiled scoring scores at;
#   1 = native resolution), is cut into non-overlapping image_size x image_size tiles (a centred
#   grid; the leftover border is dropped), and every tile is one training example. An image
#   smaller than image_size in either direction is resized whole. With data.tiles_per_image=k > 0
#   the scaled image is cached whole instead and each epoch draws k random tiles from it
#   (`training_tiles.py`); an image smaller than a tile is padded by reflection, as scoring pads.
# "auto": "tile" or "none" from the training images' sizes (`training_tiles.choose_crop`).
#
# Both change the scale the model sees in training relative to the whole-image evaluation (by a
# factor 1 / crop_fraction for "random"; by short side / image_size for "tile"), so they suit
# stationary textures and surfaces more than object-centred images.

CROP_MODES = ("none", "random", "tile", training_tiles.AUTO)


def resize_short_side(image: tf.Tensor, side: int) -> tf.Tensor:
    """Aspect-preserving bilinear resize so the shorter side is `side` pixels."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = side / tf.reduce_min(shape)
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), side)
    image = tf.image.resize(image, new, method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def tile_image(image: tf.Tensor, size: int, resize: str = _DEFAULTS.data.resize) -> tf.Tensor:
    """[n, size, size, C] non-overlapping tiles on a centred grid ([1, ...], the whole image
    placed by `resize`, if too small)."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    rows, cols = h // size, w // size

    def tiles():
        top, left = (h - rows * size) // 2, (w - cols * size) // 2
        grid = image[top : top + rows * size, left : left + cols * size]
        grid = tf.reshape(grid, [rows, size, cols, size, -1])
        return tf.reshape(tf.transpose(grid, [0, 2, 1, 3, 4]), [rows * cols, size, size, -1])

    def whole():
        return resize_image(image, size, resize)[None]

    return tf.cond(tf.logical_and(rows > 0, cols > 0), tiles, whole)


def _whole_fit(resize: str):
    """Whole images to the model's size, as `resize` (letterbox or squash) says."""
    return lambda image, size: resize_image(image, size, resize)


def _training_fit(
    crop: str,
    crop_fraction: float,
    tiles_per_image: int = 0,
    scale: float = 1.0,
    resize: str = _DEFAULTS.data.resize,
):
    """The per-image sizing used before caching, for a resolved crop mode (see above)."""
    if crop not in CROP_MODES or crop == training_tiles.AUTO:
        raise ConfigError(f"config.data.crop={crop!r}: expected one of {list(CROP_MODES)}.")
    if crop == "random":
        if not 0.0 < crop_fraction <= 1.0:
            raise ConfigError(
                f"config.data.crop_fraction={crop_fraction!r}: expected a fraction in (0, 1] "
                "(the side of a random crop relative to the image's short side)."
            )
        return lambda image, size: resize_short_side(image, round(size / crop_fraction))
    if crop == "tile" and tiles_per_image:
        return lambda image, size: training_tiles.pad_to_tile(scale_image(image, scale), size)
    if crop == "tile":
        return lambda image, size: tile_image(scale_image(image, scale), size, resize)
    return _whole_fit(resize)


def _training_crops(
    ds: tf.data.Dataset, crop: str, size: int, seed: int, tiles_per_image: int, images: int
) -> tf.data.Dataset:
    """Cached training images -> examples of [size, size, C] (after `_training_fit`)."""
    if crop == "tile" and tiles_per_image:
        return training_tiles.sampled_tiles(ds, size, tiles_per_image, seed, images)
    if crop == "tile":
        return ds.unbatch()
    if crop == "random":
        # A fresh random offset per image and epoch, reproducible from `seed`.
        offsets = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def crop_one(image, r):
            shape = tf.stack([size, size, tf.shape(image)[-1]])
            return tf.image.stateless_random_crop(image, shape, seed=tf.stack([r, seed]))

        return tf.data.Dataset.zip((ds, offsets)).map(crop_one, num_parallel_calls=AUTOTUNE)
    return ds


def make_dataset(
    images: ImageSet,
    *,
    channels: int,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = _DEFAULTS.seed,
    cache: bool = _DEFAULTS.data.cache,
    shuffle_buffer: int = _DEFAULTS.data.shuffle_buffer,
    crop: str = _DEFAULTS.data.crop,
    crop_fraction: float = _DEFAULTS.data.crop_fraction,
    tiles_per_image: int = _DEFAULTS.data.tiles_per_image,
    tile_scale: float = _DEFAULTS.score.tile_scale,
    resize: str = _DEFAULTS.data.resize,
    native: bool = False,
    validation: bool = False,
) -> tf.data.Dataset:
    """The batched pipeline for one split.

    With `training=True` it yields image batches only (what `model.fit` needs), shuffled with
    `seed` and reshuffled every epoch, after the training crops or tiles of `crop`; otherwise it
    yields full element dicts of whole images in file order (`crop` is ignored), resized to
    `image_size`, or with `native=True` at their own size (and their masks'), one per batch and
    uncached: large native images are read once and never all held in memory. `crop="auto"` is
    resolved here from the images' sizes (`training_tiles.choose_crop`, logged); `tiles_per_image`
    and `tile_scale` apply to `crop="tile"`; `resize` (letterbox or squash) places whole images
    (and their masks) in the model's square, in training as in scoring.

    `validation=True` (with `training=True`) gives the validation loss its examples: cut as the
    training images are, so that `val_loss` is measured at the scale the model learns (whole
    images resized to image_size would be another scale under tiles), but drawn once, the same
    every epoch, and unshuffled.
    """
    if native and training:
        raise ValueError("native=True is for scoring (training=False): training needs tiles.")
    tiles_per_image = training_tiles.check_tiles_per_image(tiles_per_image)
    if training and crop == training_tiles.AUTO:
        crop, reason = training_tiles.choose_crop(images, image_size, tile_scale)
        logging.info("%s.", reason)
    fit = (
        _training_fit(crop, crop_fraction, tiles_per_image, tile_scale, resize)
        if training
        else _whole_fit(resize)
    )
    ds = _source(images, channels, image_size, None if native else fit, resize)
    if cache and not native:
        ds = ds.cache()
    if training:
        ds = ds.map(lambda row: row["image"], num_parallel_calls=AUTOTUNE)
        ds = _training_crops(ds, crop, image_size, seed, tiles_per_image, len(images))
        if validation:
            # Random crops and sampled tiles are drawn on the first pass and then read back.
            ds = ds.cache() if crop == "random" or (crop == "tile" and tiles_per_image) else ds
        else:
            # Tiles multiply the examples, so their buffer is not capped at the number of images.
            buffer = shuffle_buffer if crop == "tile" else min(shuffle_buffer, len(images))
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    # Native images differ in size, so they go one at a time (the tiles make the batch).
    ds = ds.batch(1 if native else batch_size)
    options = tf.data.Options()
    # In-memory and path-list sources have no files to shard, so workers split by element.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(AUTOTUNE)


def dataset_for_split(
    images: ImageSet, config, *, training: bool, native: bool = False, validation: bool = False
) -> tf.data.Dataset:
    """`make_dataset` with the sizes, batch and seed taken from a full experiment config."""
    return make_dataset(
        images,
        channels=config.data.channels,
        image_size=config.data.image_size,
        batch_size=config.data.batch_size,
        training=training,
        seed=config.seed,
        cache=config.data.cache,
        shuffle_buffer=config.data.shuffle_buffer,
        crop=config.data.crop,
        crop_fraction=config.data.crop_fraction,
        tiles_per_image=config.data.tiles_per_image,
        tile_scale=config.score.tile_scale,
        resize=config.data.resize,
        native=native,
        validation=validation,
    )
