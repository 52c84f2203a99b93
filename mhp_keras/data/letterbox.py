"""Where an image lands when whole-image mode fits it into the model's square input.

`data.resize="letterbox"` scales the long side to image_size, keeping the aspect ratio, and pads
the bottom and right with zeros; "squash" scales both sides to image_size. The training pipeline
(`pipeline.resize_image`), the scorer and the SavedModel all place an image by this one rule, so
the scorer knows which part of the square is the image (its `map_size`) and leaves the padding
out of the score and the metrics. A square image lands identically under both.
"""

from __future__ import annotations

import tensorflow as tf

RESIZE_MODES = ("letterbox", "squash")


def fitted_size(shape_hw, size: int, mode: str) -> tf.Tensor:
    """The [height, width] (int32) an image of [h, w] `shape_hw` takes in the size x size square."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize={mode!r}: expected one of {list(RESIZE_MODES)}.")
    shape = tf.cast(shape_hw, tf.float32)
    if mode == "squash":
        return tf.fill([2], tf.constant(size, tf.int32))
    fitted = tf.round(shape * (size / tf.reduce_max(shape)))
    return tf.cast(tf.clip_by_value(fitted, 1.0, float(size)), tf.int32)


def content_box(sizes, size: int) -> tf.Tensor:
    """bool [B, size, size]: True on each image's own part (`sizes` [B, 2]) of its square."""
    sizes = tf.cast(sizes, tf.int32)
    index = tf.range(size)
    rows = index[None, :, None] < sizes[:, 0, None, None]
    cols = index[None, None, :] < sizes[:, 1, None, None]
    return tf.logical_and(rows, cols)
