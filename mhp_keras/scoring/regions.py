"""The region of interest: which pixels of an image count in its score and in the pixel metrics.

Inspection photographs show the part inside a dark or uniform frame (fixture, background) whose
edge is where the model reconstructs worst, so without a region the hottest pixels of a normal
image lie on the frame, not on the part. `score.roi` chooses the region:

* "none": every pixel (the image's own part of a letterboxed square);
* "auto": per image, the rows and columns from each edge that are near-constant (their spread
  below a quarter of the image's) and match the edge's level are a frame, and `score.roi_margin`
  more pixels inside it are left out too; the frame's width may differ per image and per side;
* "mask": one mask image for a fixed camera (`data.roi_mask`, white = inspect), resized to each
  image. The mask is stored in the model's config as a PNG (`encode_mask`), so it travels with
  `model.keras` and becomes a constant of the exported SavedModel.

Everything here runs in the graph, so the scorer (`mhp_keras.scoring.scorer`) applies the same
region in `model.score`, the evaluation, both SavedModel signatures and `mhp-predict`. An image
whose region would be empty (all frame) counts every pixel instead.
"""

from __future__ import annotations

import base64
import os

import numpy as np
import tensorflow as tf

from mhp_keras.errors import ConfigError

ROI_MODES = ("none", "auto", "mask")
# A row or column is "near-constant" when its spread is below this share of the image's.
UNIFORM_SHARE = 0.25
# How a mask is stored in a model's config: this prefix and a base64 PNG.
PNG_PREFIX = "png:"
EXPECTED = (
    "expected a mask image (PNG, JPEG, BMP, TIFF, ...) that is white where images are inspected"
)


def _mask_error(path: str, problem: str) -> ConfigError:
    return ConfigError(f"data.roi_mask={path!r} (ConAD roi_mask): {problem}; {EXPECTED}.")


def read_mask_file(path: str) -> np.ndarray:
    """bool [h, w]: True where the mask image at `path` is white (> 0.5); a ConfigError names the
    file and the key when it is missing, unreadable or has no white pixel."""
    from mhp_keras.data.image_files import decode_error_text, decode_on_host

    if not os.path.isfile(path):
        raise _mask_error(path, "no such file")
    try:
        pixels, _ = decode_on_host(path)
    except Exception as error:  # Pillow raises many types for a bad file
        raise _mask_error(path, f"could not be read ({decode_error_text(error)})") from None
    return _checked(np.asarray(pixels, np.float32).max(axis=-1) > 0.5, path)


def _checked(mask: np.ndarray, name: str) -> np.ndarray:
    if mask.ndim != 2 or 0 in mask.shape:
        raise _mask_error(name, f"has shape {mask.shape}, not [height, width]")
    if not mask.any():
        raise _mask_error(name, "has no white pixel, so nothing would be inspected")
    return mask


def encode_mask(value) -> str:
    """The stored form of a `roi_mask` argument: "" (none), or "png:<base64>" of the mask, read
    from a file path, a 2-D array (nonzero = inspect) or an already stored string."""
    if value is None or (isinstance(value, str) and value == ""):
        return ""
    if isinstance(value, str) and value.startswith(PNG_PREFIX):
        return value
    if isinstance(value, (str, os.PathLike)):
        mask = read_mask_file(os.fspath(value))
    else:
        mask = _checked(np.asarray(value) > 0.5, "<array>")
    png = tf.io.encode_png(tf.constant(mask.astype(np.uint8)[..., None] * 255)).numpy()
    return PNG_PREFIX + base64.b64encode(png).decode("ascii")


def decode_mask(stored: str) -> np.ndarray | None:
    """uint8 [h, w, 1] (1 = inspect) of a stored mask, or None for ""."""
    if not stored:
        return None
    png = base64.b64decode(stored[len(PNG_PREFIX) :])
    return (tf.io.decode_png(png, channels=1).numpy() > 127).astype(np.uint8)


def _edge_run(flags: tf.Tensor) -> tf.Tensor:
    """How many leading entries of the bool vector `flags` are True."""
    return tf.reduce_sum(tf.math.cumprod(tf.cast(flags, tf.int32)))


def _frame_widths(levels: tf.Tensor, spreads: tf.Tensor, tolerance) -> tuple:
    """(from the start, from the end): the frame lines along one axis. A line belongs to the
    frame while it is near-constant and at the level of the edge line."""
    uniform = spreads <= tolerance
    start = tf.logical_and(uniform, tf.abs(levels - levels[0]) <= tolerance)
    end = tf.logical_and(uniform, tf.abs(levels - levels[-1]) <= tolerance)
    return _edge_run(start), _edge_run(tf.reverse(end, [0]))


def frame_region(image: tf.Tensor, margin: int) -> tf.Tensor:
    """bool [h, w] of an image [h, w, C]: False on the near-constant frame found from each edge
    and `margin` pixels inside it (sides without a frame keep their edge)."""
    grey = tf.reduce_mean(tf.cast(image, tf.float32), axis=-1)
    h, w = tf.shape(grey)[0], tf.shape(grey)[1]
    tolerance = UNIFORM_SHARE * tf.math.reduce_std(grey) + 1e-6
    top, bottom = _frame_widths(tf.reduce_mean(grey, 1), tf.math.reduce_std(grey, 1), tolerance)
    left, right = _frame_widths(tf.reduce_mean(grey, 0), tf.math.reduce_std(grey, 0), tolerance)

    def inner(width):  # the frame plus the margin, where there is a frame
        return tf.where(width > 0, width + margin, 0)

    rows, cols = tf.range(h)[:, None], tf.range(w)[None, :]
    inside_rows = tf.logical_and(rows >= inner(top), rows < h - inner(bottom))
    inside_cols = tf.logical_and(cols >= inner(left), cols < w - inner(right))
    return tf.logical_and(inside_rows, inside_cols)


def region_of(image: tf.Tensor, roi: str, mask, margin: int) -> tf.Tensor | None:
    """bool [h, w] of one image [h, w, C] under `roi` (None for "none": every pixel); `mask` is
    the decoded fixed mask (`decode_mask`), resized here to the image. Never empty."""
    if roi == "none":
        return None
    if roi == "auto":
        region = frame_region(image, margin)
    elif roi == "mask":
        fitted = tf.image.resize(tf.constant(mask), tf.shape(image)[:2], method="nearest")
        region = fitted[..., 0] > 0
    else:
        raise ValueError(f"roi={roi!r}: expected one of {list(ROI_MODES)}.")
    return tf.logical_or(region, tf.logical_not(tf.reduce_any(region)))


def outside_as_nan(amap: tf.Tensor, region) -> tf.Tensor:
    """The map with NaN outside `region` (pixels not inspected); unchanged for None."""
    if region is None:
        return amap
    return tf.where(region, amap, tf.constant(np.nan, amap.dtype))
