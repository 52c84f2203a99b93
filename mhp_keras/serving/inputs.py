"""`mhp-predict`'s inputs: the SavedModel version and its signatures, the image files, and
scoring a batch of files through the graph's decoder or the host's (see `serving.predict`).

A file that cannot be read or decoded is not an exception here but the text of its problem, so
one bad file costs only its own row of scores.csv.
"""

from __future__ import annotations

import collections
import io
import os
import stat

import numpy as np
import tensorflow as tf

from mhp_keras.data.image_files import (
    FORMAT_NAMES,
    HEADER_BYTES,
    IMAGE_EXTENSIONS,
    decode_error_text,
    decode_on_host,
    needs_host_decoding,
    warn_first_frame,
)
from mhp_keras.data.pipeline import convert_channels
from mhp_keras.errors import DataError, UserError
from mhp_keras.serving.export import existing_versions

SIGNATURE = "serving_bytes"  # encoded files the graph decodes
PIXELS_SIGNATURE = "serving_default"  # uint8 pixels of files decoded on the host


def resolve_saved_model(path: str) -> str:
    """The version directory for `path`: itself if it holds saved_model.pb, else its top version."""
    expected = (
        "expected a SavedModel version directory (e.g. export/conad/1, holding saved_model.pb) or "
        "a model directory holding integer version directories (e.g. export/conad)"
    )
    if not path:
        raise UserError(f"--saved_model is required; {expected}.")
    if not os.path.isdir(path):
        what = "is not a directory" if os.path.exists(path) else "does not exist"
        raise DataError(f"--saved_model={path} {what}; {expected}.")
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    for version in reversed(existing_versions(path)):
        candidate = os.path.join(path, str(version))
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    raise DataError(
        f"--saved_model={path} holds no saved_model.pb nor any version of one; {expected}."
    )


def load_signature(version_dir: str):
    """(loaded SavedModel, its `serving_bytes` signature); a DataError if it has none."""
    try:
        loaded = tf.saved_model.load(version_dir)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad --saved_model for the user
        raise DataError(
            f"--saved_model={version_dir} could not be loaded as a SavedModel "
            f"({type(e).__name__}: {short_error(e)}); expected a directory written by "
            "mhp_keras.serving.export.export_saved_model."
        ) from None
    if SIGNATURE not in loaded.signatures:
        raise DataError(
            f"--saved_model={version_dir} has signatures {sorted(loaded.signatures)} but no "
            f"'{SIGNATURE}'; expected a ConAD export from "
            "mhp_keras.serving.export.export_saved_model."
        )
    return loaded, loaded.signatures[SIGNATURE]


def find_images(path: str, recursive: bool = False) -> tuple[list[str], str]:
    """Image files to score (sorted) and the folder their heatmap names are relative to."""
    exts = ", ".join(IMAGE_EXTENSIONS)
    if not path:
        raise UserError(f"--input is required: an image file or a folder of images ({exts}).")
    if os.path.exists(path) and not os.path.isdir(path):
        # Also a named pipe or device named like an image: score_batch gives it its row.
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"--input={path} is not an image file; expected one of: {exts}.")
        return [path], os.path.dirname(path) or "."
    if not os.path.isdir(path):
        raise DataError(f"--input={path} does not exist; expected an image file or a folder.")
    if recursive:
        files = [
            os.path.join(root, name)
            for root, _, names in os.walk(path)
            for name in names
            if name.lower().endswith(IMAGE_EXTENSIONS)
        ]
    else:
        files = [
            os.path.join(path, name)
            for name in os.listdir(path)
            if name.lower().endswith(IMAGE_EXTENSIONS)
            and not os.path.isdir(os.path.join(path, name))
        ]
    if not files:
        hint = "" if recursive else " (pass --recursive to include subfolders)"
        raise DataError(
            f"--input={path} contains no images; expected files ending in {exts}{hint}."
        )
    return sorted(files), path


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def not_regular(path: str) -> str | None:
    """Why `path` must not be opened (it is a named pipe, socket or device: reading one can block
    for ever or never end), or None for a regular file (a symlink to one is fine). Looks only at
    its stat, never opens it."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # open() reports it
    if stat.S_ISREG(mode):
        return None
    what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
    return f"is {what}, not a regular file; skipped without reading it"


def short_error(error: Exception) -> str:
    """The informative line(s) of a TF error, without graph node and stack-trace noise."""
    text = getattr(error, "message", None) or str(error)
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip()
        and not line.strip().startswith(("Graph execution error", "Detected at node", "[["))
        and "stack traces unavailable" not in line
    ]
    return " ".join(lines)[:300] or type(error).__name__


def pixel_input(loaded, metadata: dict):
    """(`serving_default`, its channel count), or (None, 0) if the SavedModel has none."""
    signature = loaded.signatures.get(PIXELS_SIGNATURE)
    if signature is None:
        return None, 0
    spec = signature.structured_input_signature[1].get("images")
    channels = (spec.shape[-1] if spec is not None else None) or metadata.get("channels")
    return (signature, int(channels)) if channels else (None, 0)


def host_pixels(contents: bytes, channels: int) -> tuple[np.ndarray, int]:
    """(uint8 [h, w, channels] for `serving_default`, frames) of a file decoded on the host.

    Decoded and converted to `channels` exactly as the training pipeline's host fallback does, in
    [0, 1] floats, then rounded to the nearest 8-bit level (a 16-bit v becomes round(v * 255 /
    65535)), the only step that differs from training, by at most half a level.
    """
    image, frames = decode_on_host(io.BytesIO(contents))
    image = convert_channels(tf.constant(image), channels).numpy()
    return np.round(np.clip(image.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8), frames


def _call_isolated(call, inputs: list, failure: str) -> list:
    """`call(inputs)`'s outputs split per input; if the call fails, each input alone, so that
    only the input at fault fails: a list of output dicts, or of error texts for failed inputs
    (`failure` followed by TF's message)."""
    try:
        out = {k: v.numpy() for k, v in call(inputs).items()}
    except tf.errors.OpError as e:
        if len(inputs) == 1:
            message = short_error(e)
            if message.startswith("Unknown image file format"):
                # TF lists the formats its op knows, not the ones this tool reads.
                message = f"not a {FORMAT_NAMES} file"
            return [f"{failure} ({message})"]
        return [result for one in inputs for result in _call_isolated(call, [one], failure)]
    return [{k: v[i] for k, v in out.items()} for i in range(len(inputs))]


def score_batch(encoded, pixels, channels: int, paths: list[str]) -> list:
    """Per path, the signature's outputs for it or the text of why it could not be scored."""
    results: list = [None] * len(paths)
    in_graph, on_host = [], collections.defaultdict(list)  # on_host: one call per image size
    for i, path in enumerate(paths):
        results[i] = not_regular(path)
        if results[i] is not None:
            continue
        try:
            with open(path, "rb") as f:
                contents = f.read()
        except OSError as e:
            results[i] = f"could not be read ({e.strerror})"
            continue
        if not needs_host_decoding(contents[:HEADER_BYTES]):
            in_graph.append((i, contents))
        elif pixels is None:
            results[i] = (
                f"needs decoding on the host, but the SavedModel has no {PIXELS_SIGNATURE} "
                "signature to send its pixels to"
            )
        else:
            try:
                image, frames = host_pixels(contents, channels)
            except Exception as e:  # noqa: BLE001 - any failure to decode is this file's problem
                results[i] = decode_error_text(e)
                continue
            warn_first_frame(path, frames)
            on_host[image.shape].append((i, image))

    def by_bytes(contents):
        return encoded(image_bytes=tf.constant(contents, dtype=tf.string))

    def by_pixels(images):
        return pixels(images=tf.constant(np.stack(images)))

    calls = [(by_bytes, in_graph, "could not be decoded as an image")]
    calls += [(by_pixels, group, "could not be scored") for group in on_host.values()]
    for call, group, failure in calls:
        if group:
            index, inputs = zip(*group, strict=True)
            for i, result in zip(index, _call_isolated(call, list(inputs), failure), strict=True):
                results[i] = result
    return results
