"""Scores image files with an exported ConAD SavedModel.

    python -m mhp_keras.serving.predict --saved_model=export/conad --input=images/ --output_dir=out

`--saved_model` is a version directory (`export/conad/3`) or a model directory, in which case the
highest integer version is used. `--input` is one image file or a folder of PNG, JPEG, BMP, GIF,
WebP or TIFF files (extensions in any case; sorted; subfolders with `--recursive`).

Decoding follows training (`mhp_keras.data.image_files`), one rule per file from its first bytes:
files the exported graph decodes (PNG, JPEG including CMYK, GIF, uncompressed grey/24/32-bit BMP)
go as encoded bytes to the `serving_bytes` signature, so decoding, channel conversion and resizing
are the graph's, as in training. The rest (TIFF, WebP, palette or compressed BMP) is decoded on
the host by `image_files.decode_on_host`, the training pipeline's own host decoder, converted to
the model's channels by the pipeline's `convert_channels`, and sent to `serving_default` (one call
per image size). That signature takes uint8 only, so pixels are rounded to the nearest of 256
levels: a 16-bit value v is sent as round(v * 255 / 65535), training's v / 65535 to within 1/510.
A multi-page TIFF or animated WebP is scored on its first page or frame, with a warning naming the
file; an animated GIF on its first frame.

Writes `OUTPUT_DIR/scores.csv` (path, score, is_anomalous, normalized_score, winner_index,
anomalous_pixels, error) and, per scored image (named after its path relative to the input
folder): `heatmaps/` (the anomaly map, `--heatmaps`), `masks/` (white where the map reaches the
pixel threshold, `--masks`) and `overlays/` (the heat map over the image at the image's own size,
the mask's outline in white, `--overlays`). A tiling model's maps have their image's own size.
`--threshold` and `--pixel_threshold` replace the thresholds stored in the model for this run
(`is_anomalous`, `normalized_score` and the masks follow them). Heatmaps share one colour scale
over the whole run, never a per-image min-max, so colours compare across images: the project's
one rule (`mhp_keras.scoring.reports.heatmap_scale`) over all anomaly-map pixels of the run (a
subsample for large runs), centred on the image threshold, recorded in
`OUTPUT_DIR/heatmap_scale.json`.

Bad files do not stop a batch job: a file that cannot be read or decoded gets a row with its
error in the `error` column and empty score columns (good rows have an empty `error`), every
other file is scored, and the count of failed files, with up to 10 of them, is printed on stderr.

Exit status:
  0  every file was scored (and only then);
  3  the run happened and scores.csv was written, but at least one file (possibly every one)
     could not be scored: its row says why;
  2  nothing was scored and no scores.csv was written: a bad flag, a missing or unloadable
     SavedModel, a missing input, a folder without image files, an output folder that cannot be
     written. One paragraph `error: ...` on stderr, no traceback (see mhp_keras/cli.py).
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
import sys
import tempfile

# Before TensorFlow: importing mhp_keras.cli quiets its logs (unless --verbosity is given).
import mhp_keras.cli  # noqa: F401  # isort: skip

import matplotlib.colors as mcolors
import numpy as np
import tensorflow as tf
from absl import flags

from mhp_keras.cli import EXIT_PARTIAL, ensure_output_dir, run_app
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
from mhp_keras.io_utils import atomic_path, write_json_atomic, write_text_atomic
from mhp_keras.scoring.calibration import decisions
from mhp_keras.scoring.reports import HEATMAP_CMAP, heatmap_rgb, heatmap_scale
from mhp_keras.serving.export import existing_versions, read_metadata

SIGNATURE = "serving_bytes"  # encoded files the graph decodes
PIXELS_SIGNATURE = "serving_default"  # uint8 pixels of files decoded on the host
SHOWN_FAILURES = 10  # failed files listed on stderr; scores.csv has them all
MIN_HEATMAP_SIDE = 128  # small maps are enlarged (nearest neighbour) to at least this side
_SCALE_SAMPLE = 2_000_000  # pixels used to estimate the run's colour scale

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel version dir, or model dir (highest version).")
flags.DEFINE_string(
    "input", None, "An image file or a folder of images (png, jpg, bmp, gif, webp, tif; any case)."
)
flags.DEFINE_string("output_dir", None, "Where scores.csv and heatmaps/ are written.")
flags.DEFINE_integer("batch_size", 32, "Images per call of the SavedModel.", lower_bound=1)
flags.DEFINE_boolean("heatmaps", True, "Write one anomaly-map PNG per image into heatmaps/.")
flags.DEFINE_boolean("masks", True, "Write one defect-mask PNG per image into masks/.")
flags.DEFINE_boolean(
    "overlays", True, "Write the heat map over each image, mask outlined, into overlays/."
)
flags.DEFINE_float(
    "threshold", None, "Image threshold to use instead of the one stored in the model."
)
flags.DEFINE_float(
    "pixel_threshold", None, "Pixel threshold (for masks) instead of the one stored in the model."
)
flags.DEFINE_boolean("recursive", False, "Also score images in subfolders of --input.")


# -- inputs --------------------------------------------------------------------------------------


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
            f"({type(e).__name__}: {_short(e)}); expected a directory written by "
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
    if os.path.isfile(path):
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
            if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(path, name))
        ]
    if not files:
        hint = "" if recursive else " (pass --recursive to include subfolders)"
        raise DataError(
            f"--input={path} contains no images; expected files ending in {exts}{hint}."
        )
    return sorted(files), path


def _short(error: Exception) -> str:
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


def _pixel_input(loaded, metadata: dict):
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
            message = _short(e)
            if message.startswith("Unknown image file format"):
                # TF lists the formats its op knows, not the ones this tool reads.
                message = f"not a {FORMAT_NAMES} file"
            return [f"{failure} ({message})"]
        return [result for one in inputs for result in _call_isolated(call, [one], failure)]
    return [{k: v[i] for k, v in out.items()} for i in range(len(inputs))]


def _score_batch(encoded, pixels, channels: int, paths: list[str]) -> list:
    """Per path, the signature's outputs for it or the text of why it could not be scored."""
    results: list = [None] * len(paths)
    in_graph, on_host = [], collections.defaultdict(list)  # on_host: one call per image size
    for i, path in enumerate(paths):
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


def _heatmap_names(files: list[str], root: str) -> list[str]:
    """heatmaps/<relative path without extension>.png; the extension is kept where stems clash."""
    stems = [os.path.splitext(os.path.relpath(f, root))[0] for f in files]
    counts = collections.Counter(stems)
    return [
        (os.path.relpath(f, root) if counts[s] > 1 else s) + ".png"
        for f, s in zip(files, stems, strict=True)
    ]


def colourise(amap: np.ndarray, norm: mcolors.Normalize) -> np.ndarray:
    """An [h, w] map to an RGB uint8 image on the run's fixed scale `norm`, enlarged if small."""
    rgb = np.round(heatmap_rgb(amap, norm) * 255).astype(np.uint8)
    factor = max(1, math.ceil(MIN_HEATMAP_SIDE / max(amap.shape)))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def _write_png(path: str, rgb: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        tf.io.write_file(tmp, tf.io.encode_png(rgb))


def _decision_values(metadata: dict, threshold, pixel_threshold) -> dict:
    """The thresholds and score scale in force: the flags' overrides, else the model's."""

    def pick(override, key, unset):
        if override is not None:
            return float(override)
        value = metadata.get(key)
        return unset if value is None else float(value)

    return {
        "threshold": pick(threshold, "threshold", math.inf),
        "pixel_threshold": pick(pixel_threshold, "pixel_threshold", math.inf),
        "score_scale": pick(None, "score_scale", 1.0),
    }


def _own_map(out: dict) -> np.ndarray:
    """The image's anomaly map, cut to its own size (tiled exports pad a request's maps to the
    largest image in it and say each one's size in `map_size`)."""
    amap = np.asarray(out["anomaly_map"])
    if "map_size" in out:
        height, width = (int(v) for v in out["map_size"])
        amap = amap[:height, :width]
    return amap


def outline(mask: np.ndarray) -> np.ndarray:
    """The border pixels of a boolean mask: mask pixels with a 4-neighbour outside it."""
    padded = np.pad(mask, 1, mode="edge")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def overlay_png(path: str, amap: np.ndarray, mask: np.ndarray, norm) -> np.ndarray:
    """The image at its own size, greyed, with the heat map blended over it and the mask's
    outline drawn in white: uint8 RGB."""
    from mhp_keras.scoring.reports import overlay

    image, _ = decode_on_host(path)
    rgb = convert_channels(tf.constant(image), 3).numpy()
    heat = heatmap_rgb(amap, norm)
    picture = overlay(rgb, heat)
    rows = np.arange(rgb.shape[0]) * mask.shape[0] // rgb.shape[0]
    cols = np.arange(rgb.shape[1]) * mask.shape[1] // rgb.shape[1]
    picture[outline(mask[rows][:, cols])] = 1.0
    return np.round(np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8)


def predict(
    saved_model: str,
    input_path: str,
    output_dir: str,
    batch_size: int = 32,
    heatmaps: bool = True,
    recursive: bool = False,
    progress: bool = True,
    *,
    masks: bool = True,
    overlays: bool = True,
    threshold: float | None = None,
    pixel_threshold: float | None = None,
) -> dict:
    """Scores the images under `input_path`; writes scores.csv, heat maps, masks and overlays;
    returns a summary.

    `threshold` and `pixel_threshold` replace the model's stored thresholds for this run. A file
    that cannot be read or decoded gets an error row instead of stopping the run; the summary
    counts `files`, scored `images` and lists the `failed` (path, error) pairs.
    """
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: expected a positive integer.")
    if not output_dir:
        raise UserError("--output_dir is required: the folder for scores.csv and heatmaps/.")
    for name, value in (("threshold", threshold), ("pixel_threshold", pixel_threshold)):
        if value is not None and not math.isfinite(value):
            raise UserError(f"--{name}={value}: expected a finite number.")
    files, root = find_images(input_path, recursive)
    version_dir = resolve_saved_model(saved_model)
    ensure_output_dir("--output_dir", output_dir)  # before the slow load of the model
    loaded, encoded = load_signature(version_dir)
    metadata = read_metadata(version_dir) or {}
    pixels, channels = _pixel_input(loaded, metadata)
    values = _decision_values(metadata, threshold, pixel_threshold)

    bar = None
    if progress and len(files) > batch_size:
        import keras

        bar = keras.utils.Progbar(len(files), unit_name="image")
    rows, failed, scored, sample, sizes = [], [], [], [], []
    pictures = heatmaps or masks or overlays
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".maps-") as scratch:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            for path, out in zip(
                batch, _score_batch(encoded, pixels, channels, batch), strict=True
            ):
                if isinstance(out, str):
                    rows.append([path, "", "", "", "", "", out])
                    failed.append((path, out))
                    continue
                amap = _own_map(out)
                decided = {
                    k: v.numpy()
                    for k, v in decisions([out["anomaly_score"]], amap[None], **values).items()
                }
                anomalous = bool(decided["is_anomalous"][0])
                rows.append(
                    [
                        path,
                        repr(float(out["anomaly_score"])),
                        "true" if anomalous else "false",
                        f"{float(decided['normalized_score'][0]):.6g}",
                        int(out["winner_index"]),
                        int(decided["anomaly_mask"].sum()),
                        "",
                    ]
                )
                if pictures:
                    # Maps go to disk, so a large run needs no RAM for them; a few pixels of
                    # each are kept for the run's colour scale.
                    np.save(os.path.join(scratch, f"{len(scored)}.npy"), amap)
                    step = max(1, amap.size * len(files) // _SCALE_SAMPLE)
                    sample.append(amap.reshape(-1)[::step].astype(np.float64))
                    sizes.append(amap.size)
                scored.append(path)
            if bar is not None:
                bar.add(len(batch))

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(
            [
                "path",
                "score",
                "is_anomalous",
                "normalized_score",
                "winner_index",
                "anomalous_pixels",
                "error",
            ]
        )
        writer.writerows(rows)
        write_text_atomic(os.path.join(output_dir, "scores.csv"), buffer.getvalue())

        scale = None
        if pictures and scored:
            norm = heatmap_scale(
                np.concatenate(sample),
                pixels=int(np.mean(sizes)),
                threshold=values["threshold"],
                aggregate=metadata.get("score_aggregate", "sum"),
                topk_fraction=metadata.get("topk_fraction", 0.1),
            )
            scale = {
                "low": float(norm.vmin),
                "high": float(norm.vmax),
                "center": float(norm.vcenter) if hasattr(norm, "vcenter") else None,
                "rule": (
                    "one colour scale for the run (mhp_keras.scoring.reports.heatmap_scale): "
                    "from a low "
                    "to a high percentile of all anomaly-map pixels (per-pixel NLL), with the "
                    "pixel value matching the image threshold at the middle of the colour map"
                ),
                "colormap": HEATMAP_CMAP,
                "model_threshold": metadata.get("threshold"),
                "threshold": values["threshold"] if math.isfinite(values["threshold"]) else None,
                "pixel_threshold": (
                    values["pixel_threshold"] if math.isfinite(values["pixel_threshold"]) else None
                ),
            }
            for i, name in enumerate(_heatmap_names(scored, root)):
                amap = np.load(os.path.join(scratch, f"{i}.npy"))
                mask = amap >= values["pixel_threshold"]
                if heatmaps:
                    _write_png(os.path.join(output_dir, "heatmaps", name), colourise(amap, norm))
                if masks:
                    _write_png(
                        os.path.join(output_dir, "masks", name),
                        (mask[..., None] * 255).astype(np.uint8),
                    )
                if overlays:
                    _write_png(
                        os.path.join(output_dir, "overlays", name),
                        overlay_png(scored[i], amap, mask, norm),
                    )
            write_json_atomic(os.path.join(output_dir, "heatmap_scale.json"), scale)

    flagged = sum(r[2] == "true" for r in rows)
    return {
        "saved_model": version_dir,
        "files": len(files),
        "images": len(scored),
        "failed": failed,
        "anomalous": flagged,
        "threshold": values["threshold"] if math.isfinite(values["threshold"]) else None,
        "scores_csv": os.path.join(output_dir, "scores.csv"),
        "heatmap_scale": scale,
    }


def report(summary: dict) -> int:
    """Prints the outcome of `predict` (failed files on stderr); returns the exit status."""
    threshold = summary["threshold"]
    note = "" if threshold is not None else " (the model has no threshold: nothing is flagged)"
    failed = summary["failed"]
    of = f" of {summary['files']}" if failed else ""
    print(
        f"scored {summary['images']}{of} images with {summary['saved_model']}: "
        f"{summary['anomalous']} anomalous{note}; wrote {summary['scores_csv']}"
    )
    if not failed:
        return 0
    lines = [f"  {path}: {error}" for path, error in failed[:SHOWN_FAILURES]]
    if len(failed) > SHOWN_FAILURES:
        lines.append(f"  ... and {len(failed) - SHOWN_FAILURES} more")
    print(
        f"{len(failed)} of {summary['files']} files could not be scored; their rows in "
        f"{summary['scores_csv']} carry the error:",
        *lines,
        sep="\n",
        file=sys.stderr,
    )
    return EXIT_PARTIAL


def main(argv):
    del argv  # positional arguments are refused while the flags are parsed
    summary = predict(
        FLAGS.saved_model,
        FLAGS.input,
        FLAGS.output_dir,
        batch_size=FLAGS.batch_size,
        heatmaps=FLAGS.heatmaps,
        recursive=FLAGS.recursive,
        masks=FLAGS.masks,
        overlays=FLAGS.overlays,
        threshold=FLAGS.threshold,
        pixel_threshold=FLAGS.pixel_threshold,
    )
    return report(summary)


def cli():
    """Console-script entry point (`mhp-predict`); exits 0, 3 or 2 (see the module docstring)."""
    run_app(main)


if __name__ == "__main__":
    cli()
