"""Exports a trained `ConAD` as a TensorFlow Serving SavedModel.

Layout: `<export_base>/<model_name>/<version>/` with an integer version, as TF Serving expects;
each version is written to a hidden temporary directory beside it and renamed into place, so a
crash never leaves a half-written version that a server could pick up, and an existing version is
never replaced unless `overwrite=True`.

Signatures (S = model.image_size, C = model.channels, K = model.hypotheses):

* `serving_default`: input `images`, uint8 [batch, height, width, C], any batch and size.
* `serving_bytes`: input `image_bytes`, string [batch] of encoded PNG / JPEG / BMP / GIF (8 or
  16 bit, any channel count: alpha is dropped, grey and RGB are converted as in training).

Both scale to [0, 1] and resize to S x S inside the graph with the training pipeline's own
functions (`convert_image_dtype`, then bilinear antialiased `resize_image`), so serving
preprocesses exactly like training, and both return

* `anomaly_score` float32 [batch]: the model's score (`score.aggregate` of the map);
* `anomaly_map` float32 [batch, S, S]: the per-pixel NLL under the winning hypothesis;
* `is_anomalous` bool [batch]: `anomaly_score >= threshold`, with `model.threshold` frozen into the
  graph as a constant at export time (a model without a threshold, +inf, flags nothing);
* `best_hypothesis` float32 [batch, S, S, C]: the winning reconstruction in [0, 1];
* `winner_index` int32 [batch]: the winning head. For pixel-wise WTA (`loss.wta="pixel"`) each
  pixel has its own winner; the export reports the per-image majority (the head that wins the
  most pixels, ties to the lowest index).

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
import json
import math
import os
import re

import tensorflow as tf

import mhp_keras
from mhp_keras.data.pipeline import convert_channels, resize_image
from mhp_keras.errors import ConfigError, UserError
from mhp_keras.io_utils import atomic_path, write_json_atomic

METADATA_FILE = os.path.join("assets.extra", "mhp_keras.json")
OUTPUT_KEYS = ("anomaly_score", "anomaly_map", "is_anomalous", "best_hypothesis", "winner_index")
WINNER_RULE = {
    "sample": "winning head of the image (lowest summed NLL)",
    "pixel": "per-image majority of the per-pixel winners (ties to the lowest head index)",
}
_VERSION_RE = re.compile(r"^\d+$")


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


class _ServingModule(tf.Module):
    """The model's variables plus the two serving functions; what `tf.saved_model.save` writes."""

    def __init__(self, model):
        super().__init__(name="conad_serving")
        # Only the variables are tracked (as keras.export.ExportArchive does), not the Keras model.
        self.model_variables = list(model.variables)
        size, channels = model.image_size, model.channels
        threshold = float(model.threshold.numpy())
        wta, hypotheses = model.wta, model.hypotheses
        images_msg = f"expected images shaped [batch, height, width, {channels}] uint8"
        bytes_msg = "expected image_bytes shaped [batch]: one encoded PNG/JPEG/BMP/GIF per image"

        def outputs(images):
            """The signature outputs for a float [B, S, S, C] batch in [0, 1]."""
            out = model.analyze(images)
            score = out["anomaly_score"]
            winner = out["winner_index"]
            if wta == "pixel":
                counts = tf.reduce_sum(tf.one_hot(winner, hypotheses, dtype=tf.int32), axis=[1, 2])
                winner = tf.argmax(counts, axis=1, output_type=tf.int32)
            return {
                "anomaly_score": tf.identity(score, name="anomaly_score"),
                "anomaly_map": tf.identity(out["anomaly_map"], name="anomaly_map"),
                "is_anomalous": tf.greater_equal(score, tf.constant(threshold, tf.float32)),
                "best_hypothesis": tf.identity(out["best_hypothesis"], name="best_hypothesis"),
                "winner_index": tf.cast(winner, tf.int32),
            }

        @tf.function(
            input_signature=[tf.TensorSpec([None, None, None, channels], tf.uint8, name="images")]
        )
        def serving_default(images):
            shape = tf.shape(images)
            checks = [
                tf.debugging.assert_equal(_runtime_rank(shape), 4, message=images_msg),
                tf.debugging.assert_equal(shape[-1], channels, message=images_msg),
                tf.debugging.assert_positive(shape[1:3], message=images_msg + " (non-empty)"),
            ]
            with tf.control_dependencies(checks):
                images = tf.image.convert_image_dtype(images, tf.float32)
            return outputs(resize_image(images, size))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serving_bytes(image_bytes):
            check = tf.debugging.assert_equal(
                _runtime_rank(tf.shape(image_bytes)), 1, message=bytes_msg
            )
            with tf.control_dependencies([check]):
                image_bytes = tf.identity(image_bytes)

            def decode(contents):
                image = tf.io.decode_image(contents, expand_animations=False, dtype=tf.float32)
                return resize_image(convert_channels(image, channels), size)

            images = tf.map_fn(
                decode,
                image_bytes,
                fn_output_signature=tf.TensorSpec([size, size, channels], tf.float32),
            )
            return outputs(images)

        self.serving_default = serving_default
        self.serving_bytes = serving_bytes


def export_metadata(model, model_name: str | None, version: int | None) -> dict:
    threshold = float(model.threshold.numpy())
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
        "wta": model.wta,
        # JSON has no infinity: an unset (+inf) threshold is written as null.
        "threshold": threshold if math.isfinite(threshold) else None,
        "score_aggregate": model.score_aggregate,
        "topk_fraction": model.topk_fraction,
        "winner_index": WINNER_RULE[model.wta],
        "signatures": {
            "serving_default": f"images: uint8 [batch, height, width, {model.channels}]",
            "serving_bytes": "image_bytes: string [batch] of encoded PNG/JPEG/BMP/GIF",
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
    with atomic_path(path, overwrite=overwrite) as tmp:
        os.makedirs(tmp)
        module = _ServingModule(model)
        tf.saved_model.save(
            module,
            tmp,
            signatures={
                "serving_default": module.serving_default.get_concrete_function(),
                "serving_bytes": module.serving_bytes.get_concrete_function(),
            },
        )
        write_json_atomic(
            os.path.join(tmp, METADATA_FILE), export_metadata(model, model_name, version)
        )
    return path


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
