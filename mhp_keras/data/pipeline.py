"""Turns an `ImageSet` into a `tf.data` pipeline: decode -> resize -> scale -> cache -> shuffle ->
batch -> prefetch.

Every loader ends here, so resizing, channel conversion and scaling behave the same for arrays,
image files and tfds data. Elements are dicts with `image` (float32 [S, S, C] in [0, 1]), `label`
(int32, 1 = anomalous), `mask` (float32 [S, S, 1], zeros where the set has no masks) and `id`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mhp_keras.data.base import ImageSet

AUTOTUNE = tf.data.AUTOTUNE


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
    image = tf.image.rgb_to_grayscale(rgb) if channels == 1 else rgb
    return tf.ensure_shape(image, [None, None, channels])


def decode_image_file(path: tf.Tensor, channels: int) -> tf.Tensor:
    """Reads an image file (PNG, JPEG, BMP, GIF; 8 or 16 bit) as float32 in [0, 1]."""
    contents = tf.io.read_file(path)
    image = tf.io.decode_image(contents, expand_animations=False, dtype=tf.float32)
    return convert_channels(image, channels)


def decode_mask_file(path: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """Reads a mask PNG as {0, 1} float32 [h, w, 1]; an empty path means an all-normal mask."""

    def read():
        mask = tf.io.decode_image(tf.io.read_file(path), expand_animations=False, dtype=tf.float32)
        return tf.cast(tf.reduce_max(mask[..., :1], axis=-1, keepdims=True) > 0.5, tf.float32)

    def empty():
        return tf.zeros_like(like[..., :1])

    return tf.cond(tf.equal(tf.strings.length(path), 0), empty, read)


def resize_image(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear, antialiased resize to [size, size], clipped back into [0, 1]."""
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 1.0)


def resize_mask(mask: tf.Tensor, size: int) -> tf.Tensor:
    """Nearest-neighbour resize, so masks stay exactly {0, 1}."""
    return tf.image.resize(mask, [size, size], method="nearest")


def _source(images: ImageSet, channels: int, size: int) -> tf.data.Dataset:
    """Decoded, resized elements before caching."""
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
    if n == 0:
        raise ValueError("cannot build a pipeline from an empty ImageSet")
    ds = tf.data.Dataset.from_tensor_slices(columns)

    def prepare(row):
        if "image" in row:
            image = convert_channels(row["image"], channels)
        else:
            image = decode_image_file(row["path"], channels)
        if "mask" in row:
            mask = row["mask"]
        elif "mask_path" in row:
            mask = decode_mask_file(row["mask_path"], image)
        else:
            mask = tf.zeros_like(image[..., :1])
        return {
            "image": resize_image(image, size),
            "label": row["label"],
            "mask": resize_mask(mask, size),
            "id": row["id"],
        }

    return ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True)


def make_dataset(
    images: ImageSet,
    *,
    channels: int,
    image_size: int,
    batch_size: int,
    training: bool,
    seed: int = 0,
    cache: bool = True,
    shuffle_buffer: int = 10_000,
) -> tf.data.Dataset:
    """The batched pipeline for one split.

    With `training=True` it yields image batches only (what `model.fit` needs), shuffled with
    `seed` and reshuffled every epoch; otherwise it yields full element dicts in file order.
    """
    ds = _source(images, channels, image_size)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.map(lambda row: row["image"], num_parallel_calls=AUTOTUNE)
        ds = ds.shuffle(min(shuffle_buffer, len(images)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    return ds.prefetch(AUTOTUNE)


def dataset_for_split(images: ImageSet, config, *, training: bool) -> tf.data.Dataset:
    """`make_dataset` with the sizes, batch and seed taken from a full experiment config."""
    return make_dataset(
        images,
        channels=config.data.channels,
        image_size=config.data.image_size,
        batch_size=config.data.batch_size,
        training=training,
        seed=config.seed,
        cache=config.data.get("cache", True),
        shuffle_buffer=config.data.get("shuffle_buffer", 10_000),
    )
