"""Exports a trained `ConAD` as a TensorFlow Serving SavedModel.

Layout: `<export_base>/<model_name>/<version>/` with an integer version, as TF Serving expects;
each version is written to a hidden temporary directory beside it and renamed into place, so a
crash never leaves a half-written version that a server could pick up, and an existing version is
never replaced unless `overwrite=True`.

Signatures (S = model.image_size, C = model.channels, K = model.hypotheses):

* `serving_default`: input `images`, uint8 [batch, height, width, C], any batch and size.
* `serving_bytes`: input `image_bytes`, string [batch] of encoded images, decoded in the graph by
  TF 2.21's `tf.io.decode_image` (float32 result, as in training), which reads exactly: PNG (1 to
  16 bit; grey, grey + alpha, palette, RGB, RGBA), JPEG (grey, RGB, CMYK), GIF (first frame) and
  uncompressed BMP (8-bit grey, 24 and 32 bit). Alpha is dropped, grey and RGB are converted as
  in training. TIFF, WebP ("WebP only supports uint8 for dtype") and 1/4/16-bit or RLE BMPs fail
  with an InvalidArgumentError; BMPs with a colour palette decode wrongly (TF ignores the
  palette). Send those as pixels to `serving_default`, as `mhp-predict` does
  (`mhp_keras.data.image_files.needs_host_decoding` tells which files they are).

Both scale to [0, 1] inside the graph with the training pipeline's own functions
(`convert_image_dtype`) and score with the model's one scorer (`Scorer.outputs` of
`mhp_keras.scoring.scorer`, as `ConAD.score` and the evaluation do): a model with
`tiling="tile"` scores each image at its own size on S x S tiles; otherwise each image is fitted
into S x S as the pipeline does (`resize_image`: letterboxed, or squashed for `resize="squash"`).
The region of interest (`score.roi`; a fixed mask is a graph constant) is applied in the graph.
Both return (H x W = S x S without tiling, the image's letterboxed part given by `map_size`; with
tiling, the largest image of the request; smaller maps zero-padded at the bottom and right):

* `anomaly_score` float32 [batch]: the model's score (`score.aggregate` of the map);
* `anomaly_map` float32 [batch, H, W]: the per-pixel NLL under the winning hypothesis, NaN
  outside the region of interest (never flagged in `anomaly_mask`);
* `is_anomalous` bool [batch]: `anomaly_score >= threshold`;
* `normalized_score` float32 [batch] in [0, 1], monotone in the score, >= 0.5 exactly when
  `is_anomalous` (see `mhp_keras.scoring.calibration`);
* `anomaly_mask` bool [batch, H, W]: `anomaly_map >= pixel_threshold`;
* `best_hypothesis` float32 [batch, H, W, C]: the winning reconstruction in [0, 1];
* `winner_index` int32 [batch]: the winning head. For pixel-wise WTA (`loss.wta="pixel"`) each
  pixel has its own winner; the export reports the per-image majority (the head that wins the
  most pixels, ties to the lowest index); with tiling, the head that won the most tiles;
* `map_size` int32 [batch, 2]: the height and width of each image's own map.

The thresholds and the score scale are frozen into the graph as constants at export time (a model
without thresholds, +inf, flags nothing). Written with Keras' `keras.export.ExportArchive`, which
carries both signatures, the tiling loops and the constants, and saves only the variables the
signatures use.

Bad items of a `serving_bytes` request fail the whole request (a signature has no per-item
error, and a made-up score for a bad item could be read as a normal image); each item is decoded
once beforehand, so the InvalidArgumentError names every bad index: "image_bytes[2] is empty",
"image_bytes[1] could not be decoded as PNG/JPEG/GIF/BMP (...)".

Disk faults. A full disk or quota while writing becomes one UserError naming the version and
saying to free space and export again; the temporary is removed. A killed export leaves its
temporary (`.<version>.tmp-<pid>-…`), which the next export removes once that process is gone.

Input checks. The signature wrappers of a loaded SavedModel (and TF Serving) enforce the dtype but
not the shape, so the graph checks rank and channel count itself and fails with an
InvalidArgumentError whose message reads e.g. "expected images shaped [batch, height, width, 3]
uint8". The rank check counts the entries of `tf.shape(images)` with a runtime op, because a
static rank check would be folded away against the declared rank-4 spec. A float input to
`serving_default` is rejected by the signature itself: through `tf.saved_model.load(...)
.signatures["serving_default"]` it raises InvalidArgumentError "... input #0(zero-based) was
expected to be a uint8 tensor but is a float tensor"; through the restored function attribute
(`loaded.serving_default(x)`) a TypeError "Binding inputs to tf.function failed ... Can not cast
TensorSpec(... dtype=tf.float32 ...) to TensorSpec(... dtype=tf.uint8 ...)".

A metadata file `assets.extra/mhp_keras.json` in the version directory records image size,
channels, hypotheses, threshold, score aggregation and the mhp_keras version.
"""

from __future__ import annotations

import datetime
import errno
import json
import math
import os
import re

import keras
import tensorflow as tf
from absl import logging

import mhp_keras
from mhp_keras.data.pipeline import convert_channels
from mhp_keras.errors import ConfigError, UserError
from mhp_keras.io_utils import atomic_path, remove_stale_temporaries, write_json_atomic

METADATA_FILE = os.path.join("assets.extra", "mhp_keras.json")
OUTPUT_KEYS = (
    "anomaly_score",
    "anomaly_map",
    "is_anomalous",
    "normalized_score",
    "anomaly_mask",
    "best_hypothesis",
    "winner_index",
    "map_size",
)
WINNER_RULE = {
    "sample": "winning head of the image (lowest summed NLL)",
    "pixel": "per-image majority of the per-pixel winners (ties to the lowest head index)",
}
_VERSION_RE = re.compile(r"^\d+$")
UNDECODABLE = (
    "could not be decoded as PNG/JPEG/GIF/BMP (TIFF, WebP, palette or RLE BMP: send pixels to "
    "serving_default)"
)
# Errors of a full disk or quota, as Python raises them and as TF's C++ writers report them.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")


def existing_versions(model_dir: str) -> list[int]:
    """The integer version directories under `model_dir`, ascending (empty if it does not exist)."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(
        int(name)
        for name in os.listdir(model_dir)
        if _VERSION_RE.match(name) and os.path.isdir(os.path.join(model_dir, name))
    )


def _runtime_rank(shape: tf.Tensor) -> tf.Tensor:
    """len(shape) computed by an op that neither Python nor grappler folds into a constant."""
    return tf.reduce_sum(tf.cast(shape >= 0, tf.int32))


def _messages(channels: int) -> tuple[str, str]:
    """What a bad input to each signature is told (InvalidArgumentError messages)."""
    return (
        f"expected images shaped [batch, height, width, {channels}] uint8",
        "expected image_bytes shaped [batch]: one encoded PNG, JPEG, GIF or uncompressed BMP "
        "per image (TIFF and WebP go as pixels to serving_default)",
    )


def _checked_items(image_bytes, decode):
    """`image_bytes` once every item decodes; else an InvalidArgumentError naming each bad index.

    A decode error inside the scoring loop names no item, and a graph cannot catch it; so each
    item is first decoded by a tf.data pipeline whose `ignore_errors` drops the items that fail,
    which tells the good indices from the bad ones. The decoded size feeds the result so the
    decoding cannot be pruned away.
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    index = tf.range(count)
    items = tf.data.Dataset.from_tensor_slices((index, image_bytes))
    items = items.map(lambda i, contents: (i, tf.size(decode(contents)) > 0)).ignore_errors()
    decoded = items.reduce(
        tf.zeros([count], tf.bool),
        lambda ok, item: tf.tensor_scatter_nd_update(ok, [[item[0]]], [item[1]]),
    )
    names = tf.strings.join(["image_bytes[", tf.strings.as_string(index), "]"])
    problems = tf.where(
        tf.strings.length(image_bytes) == 0,
        tf.strings.join([names, " is empty"]),
        tf.strings.join([names, f" {UNDECODABLE}"]),
    )
    message = tf.strings.reduce_join(
        tf.boolean_mask(problems, tf.logical_not(decoded)), separator="; "
    )
    with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(decoded), [message])]):
        return tf.identity(image_bytes)


def _signature_outputs(model, out, frozen) -> dict:
    """The signature outputs from the scorer's outputs and the frozen calibration values."""
    decided = model.scorer.decisions(out["anomaly_score"], out["anomaly_map"], frozen)
    return {
        "anomaly_score": tf.identity(out["anomaly_score"], name="anomaly_score"),
        "anomaly_map": tf.identity(out["anomaly_map"], name="anomaly_map"),
        "is_anomalous": decided["is_anomalous"],
        "normalized_score": decided["normalized_score"],
        "anomaly_mask": decided["anomaly_mask"],
        "best_hypothesis": tf.identity(out["best_hypothesis"], name="best_hypothesis"),
        "winner_index": tf.cast(out["winner_index"], tf.int32),
        "map_size": tf.cast(out["map_size"], tf.int32),
    }


def _pixels_endpoint(model, frozen):
    """`serving_default`: uint8 [batch, height, width, C] images, checked, scaled to [0, 1]."""
    channels = model.channels
    images_msg, _ = _messages(channels)

    def serving_default(images):
        shape = tf.shape(images)
        checks = [
            tf.debugging.assert_equal(_runtime_rank(shape), 4, message=images_msg),
            tf.debugging.assert_equal(shape[-1], channels, message=images_msg),
            tf.debugging.assert_positive(shape[1:3], message=images_msg + " (non-empty)"),
        ]
        with tf.control_dependencies(checks):
            images = tf.image.convert_image_dtype(images, tf.float32)
        return _signature_outputs(model, model.scorer.outputs(images), frozen)

    return serving_default, [tf.TensorSpec([None, None, None, channels], tf.uint8, name="images")]


def _bytes_endpoint(model, frozen):
    """`serving_bytes`: string [batch] of encoded images, decoded in the graph as in training."""
    channels = model.channels
    _, bytes_msg = _messages(channels)

    def decode(contents):
        image = tf.io.decode_image(contents, expand_animations=False, dtype=tf.float32)
        return convert_channels(image, channels)

    def decode_all(image_bytes):
        """The decoded images, of any sizes, as a TensorArray (what a tiling scorer takes)."""
        count = tf.shape(image_bytes)[0]
        images = tf.TensorArray(tf.float32, size=count, infer_shape=False)
        _, images = tf.while_loop(
            lambda i, _: i < count,
            lambda i, images: (i + 1, images.write(i, decode(image_bytes[i]))),
            (tf.constant(0), images),
        )
        return images

    def serving_bytes(image_bytes):
        rank = _runtime_rank(tf.shape(image_bytes))
        with tf.control_dependencies([tf.debugging.assert_equal(rank, 1, message=bytes_msg)]):
            image_bytes = _checked_items(tf.identity(image_bytes), decode)
        # Sizes may differ: the scorer tiles each image, or fits each into S x S.
        return _signature_outputs(model, model.scorer.outputs(decode_all(image_bytes)), frozen)

    return serving_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")]


def serving_archive(model) -> keras.export.ExportArchive:
    """Keras' ExportArchive of `model` with the two signatures and its calibration frozen in.

    The archive tracks only the variables the endpoints use; the thresholds and the score scale
    become graph constants, so a served model's decisions cannot drift from its export.
    """
    frozen = tuple(
        tf.constant(float(v.numpy()), tf.float32)
        for v in (model.threshold, model.pixel_threshold, model.score_scale)
    )
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, (fn, signature) in (
        ("serving_default", _pixels_endpoint(model, frozen)),
        ("serving_bytes", _bytes_endpoint(model, frozen)),
    ):
        archive.add_endpoint(name, fn, input_signature=signature)
    return archive


def _finite_or_none(value: float):
    """JSON has no infinity: an unset (+inf) threshold is written as null."""
    return value if math.isfinite(value) else None


def export_metadata(model, model_name: str | None, version: int | None) -> dict:
    return {
        "format": "mhp_keras.conad.saved_model",
        "mhp_keras_version": mhp_keras.__version__,
        "tensorflow_version": tf.__version__,
        "model_name": model_name,
        "version": version,
        "exported_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "image_size": model.image_size,
        "channels": model.channels,
        "hypotheses": model.hypotheses,
        "latent_dim": model.latent_dim,
        "latent_cells_a_side": model.latent_side,
        "wta": model.wta,
        "threshold": _finite_or_none(float(model.threshold.numpy())),
        "pixel_threshold": _finite_or_none(float(model.pixel_threshold.numpy())),
        "score_scale": float(model.score_scale.numpy()),
        "score_aggregate": model.score_aggregate,
        "topk_fraction": model.topk_fraction,
        "tiling": model.tiling,
        "tile_stride": model.stride if model.tiling == "tile" else None,
        "tile_scale": model.tile_scale,
        "resize": model.resize,
        "roi": model.roi,
        "roi_margin": model.roi_margin,
        "winner_index": WINNER_RULE[model.wta],
        "signatures": {
            "serving_default": f"images: uint8 [batch, height, width, {model.channels}]",
            "serving_bytes": (
                "image_bytes: string [batch] of encoded PNG (1-16 bit), JPEG (grey, RGB, CMYK), "
                "GIF (first frame) or uncompressed BMP (8-bit grey, 24, 32 bit); not TIFF, WebP, "
                "palette or RLE BMP"
            ),
            "outputs": list(OUTPUT_KEYS),
        },
    }


def write_saved_model(
    model,
    path: str,
    *,
    model_name: str | None = None,
    version: int | None = None,
    overwrite: bool = True,
) -> str:
    """Writes the serving SavedModel (both signatures and the metadata file) to exactly `path`.

    Written under a hidden temporary name beside `path` (which TF Serving ignores) and renamed into
    place, so `path` holds either its old contents or the complete new model. With
    `overwrite=False` an existing `path` raises FileExistsError. `ConAD.export` and
    `export_saved_model` both write through here.
    """
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            os.makedirs(tmp)
            serving_archive(model).write_out(tmp, verbose=False)
            write_json_atomic(
                os.path.join(tmp, METADATA_FILE), export_metadata(model, model_name, version)
            )
    except (OSError, tf.errors.OpError) as e:
        reason = _out_of_space(e)
        if reason is None:
            raise
        # The temporary is already removed (atomic_path), so nothing partial is left.
        raise UserError(
            f"{reason} while exporting {os.path.abspath(path)}; nothing was written there. Free "
            "space on that disk and export again (--mode=export)."
        ) from None
    return path


def _out_of_space(error: Exception) -> str | None:
    """'No space left on device' or 'Disk quota exceeded' if `error` says so, else None."""
    if isinstance(error, OSError):
        return os.strerror(error.errno) if error.errno in _NO_SPACE else None
    return next((text for text in _NO_SPACE_TEXT if text in str(error)), None)


def _clean_leftovers(model_dir: str) -> None:
    """Removes the temporaries of killed exports beside the versions, and logs what it found."""
    removed, reported = remove_stale_temporaries(model_dir)
    for leftover in removed:
        logging.warning("Removed %s, left by an export that was killed.", leftover)
    for leftover in reported:
        logging.warning(
            "%s looks like the temporary of an interrupted export by an older mhp_keras; "
            "TF Serving ignores it. Delete it if no export is running.",
            leftover,
        )


def export_saved_model(
    model,
    export_base: str,
    model_name: str = "conad",
    version: int | None = None,
    *,
    overwrite: bool = False,
) -> str:
    """Writes `model` as a TF Serving SavedModel to `export_base/model_name/version`; returns it.

    `version` defaults to one more than the largest existing integer version (1 for the first).
    The version is written to a temporary sibling and renamed into place, so it appears complete
    or not at all; an existing version raises a UserError unless `overwrite=True`, in which case
    it is replaced in one swap.
    """
    if not model_name or os.sep in model_name or model_name in (".", "..") or model_name[0] == ".":
        raise ConfigError(
            f"model_name={model_name!r}: expected a plain directory name such as 'conad'."
        )
    model_dir = os.path.abspath(os.path.join(export_base, model_name))
    _clean_leftovers(model_dir)
    if version is None:
        version = (existing_versions(model_dir) or [0])[-1] + 1
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigError(f"version={version!r}: expected a positive integer version number.")
    final = os.path.join(model_dir, str(version))
    if os.path.exists(final) and not overwrite:
        raise UserError(
            f"{final} already exists; an exported version is never overwritten. Choose another "
            "version, leave version unset to use the next free one, or pass overwrite=True."
        )
    try:
        write_saved_model(model, final, model_name=model_name, version=version, overwrite=overwrite)
    except FileExistsError as e:
        raise UserError(
            f"could not move the export into {final} ({e}); another export may have "
            "written this version at the same time. Export again with another version."
        ) from e
    return final


def read_metadata(version_dir: str) -> dict | None:
    """The metadata json of an exported version, or None if it has none."""
    path = os.path.join(version_dir, METADATA_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
