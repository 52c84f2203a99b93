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
pixel threshold, `--masks`) and `overlays/` (the heat map over the image at its own size, up to
4096 px, the mask's outline in white, `--overlays`). A tiling model's maps have their image's size.
`--threshold` and `--pixel_threshold` replace the thresholds stored in the model for this run
(`is_anomalous`, `normalized_score` and the masks follow them). Heatmaps share one colour scale
over the whole run, never a per-image min-max, so colours compare across images: the project's
one rule (`mhp_keras.scoring.reports.heatmap_scale`) over all anomaly-map pixels of the run (a
subsample for large runs), centred on the image threshold, recorded in
`OUTPUT_DIR/heatmap_scale.json`.

Bad files do not stop a batch job: a file that cannot be read or decoded gets a row with its
error in the `error` column and empty score columns (good rows have an empty `error`), every
other file is scored, and the count of failed files, with up to 10 of them, is printed on stderr.
A named pipe, socket or device named like an image (in the folder, with --recursive or as
--input) is never opened, since reading one can block for ever: its row says "is a named pipe,
not a regular file; skipped without reading it". A symlink to a regular file is scored.

File names that are not valid UTF-8 (bytes such as b"bad\\xff.png" from a shared drive) are
scored like any other; in scores.csv, on stderr and in the names of heatmaps/, masks/ and
overlays/ they are written with their bytes escaped as the file system gave them, `bad\\xff.png`
(`os.fsencode(name).decode("utf-8", "backslashreplace")`), so scores.csv stays valid UTF-8.

Pictures are bounded: heatmaps/ and overlays/ of an image larger than 4096 pixels on its longest
side (`pictures.MAX_PICTURE_SIDE`) are downscaled by the smallest integer factor that fits (every
n-th pixel, no resampling). Masks, scores and anomalous_pixels always use the full-size map;
pictures of smaller images are as before.

Memory: scoring one 8000 x 8000 RGB PNG with a tiny tiling model peaked at 14.4 GB of RSS with
full-size pictures, 7.9 GB with the bounded ones (6.4 GB with --nooverlays): the rest is scoring
the image itself and its full-size maps, which still grow with the image.

Outputs that cannot be written for want of room (errno ENOSPC or EDQUOT, or EROFS) end the run
with one `error: could not write PATH: No space left on device (...)` paragraph saying to free
space and run again, no traceback. Every file is written whole (scores.csv atomically) or not at
all. Before scores.csv is written that is exit status 2 and no scores.csv; after it, status 3:
scores.csv is complete and only some pictures are missing.

Each run keeps its anomaly maps in a hidden scratch folder `OUTPUT_DIR/.maps-<pid>-<random>`,
removed at the end. A killed run leaves it behind; the next run in that folder removes those whose
process is gone and says so in one line on stderr ("removed 1 scratch folder(s) left by killed
runs: ..."), and names, without removing, old ones without a PID ("kept 1 old scratch folder(s)
of unknown owner ...").

Exit status:
  0  every file was scored (and only then);
  3  the run happened and scores.csv was written, but at least one file (possibly every one)
     could not be scored: its row says why; or the disk filled up after scores.csv was written
     (an `error:` paragraph says which picture could not be written);
  2  nothing was scored and no scores.csv was written: a bad flag, a missing or unloadable
     SavedModel, a missing input, a folder without image files, an output folder that cannot be
     written, a full disk before scores.csv was written. One paragraph `error: ...` on stderr,
     no traceback (see mhp_keras/cli/).

The work is shared with `serving.inputs` (the SavedModel, the files, scoring a batch) and
`serving.pictures` (heat maps, masks, overlays and their colour scale); this module holds the
flags, the per-image decisions, scores.csv and the report.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
import sys
import tempfile

# Before TensorFlow: importing mhp_keras.cli quiets its logs (unless --verbosity is given).
import mhp_keras.cli  # noqa: F401  # isort: skip

import numpy as np
from absl import flags

from mhp_keras.cli import EXIT_PARTIAL, ensure_output_dir, run_app
from mhp_keras.errors import DiskFull, UserError
from mhp_keras.io_utils import DISK_FULL_ERRNOS, remove_stale_temporaries, write_text_atomic
from mhp_keras.scoring.calibration import decisions
from mhp_keras.serving.export import read_metadata
from mhp_keras.serving.inputs import (
    find_images,
    load_signature,
    pixel_input,
    resolve_saved_model,
    score_batch,
)
from mhp_keras.serving.pictures import (
    MapStore,
    colourise,
    outline,
    shown_path,
    write_pictures,
)

# colourise and outline are re-exported: they were defined here before the split.
__all__ = ["cli", "colourise", "main", "outline", "predict", "report"]

SHOWN_FAILURES = 10  # failed files listed on stderr; scores.csv has them all
CSV_COLUMNS = (
    "path",
    "score",
    "is_anomalous",
    "normalized_score",
    "winner_index",
    "anomalous_pixels",
    "error",
)

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


def _check_arguments(batch_size: int, output_dir: str, threshold, pixel_threshold) -> None:
    """The `predict` arguments that need no file system, as `UserError`s naming the flag."""
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: expected a positive integer.")
    if not output_dir:
        raise UserError("--output_dir is required: the folder for scores.csv and heatmaps/.")
    for name, value in (("threshold", threshold), ("pixel_threshold", pixel_threshold)):
        if value is not None and not math.isfinite(value):
            raise UserError(f"--{name}={value}: expected a finite number.")


def _scored_row(path: str, out: dict, values: dict) -> tuple[list, np.ndarray]:
    """(the scores.csv row of a scored image, its anomaly map at the image's own size)."""
    amap = _own_map(out)
    decided = {
        k: v.numpy() for k, v in decisions([out["anomaly_score"]], amap[None], **values).items()
    }
    anomalous = bool(decided["is_anomalous"][0])
    row = [
        shown_path(path),
        repr(float(out["anomaly_score"])),
        "true" if anomalous else "false",
        f"{float(decided['normalized_score'][0]):.6g}",
        int(out["winner_index"]),
        int(decided["anomaly_mask"].sum()),
        "",
    ]
    return row, amap


def _score_files(files, score, values: dict, store, batch_size: int, progress: bool):
    """Scores `files` in batches with `score(paths)`: (csv rows, (path, error) of the failed
    files, paths scored). Each scored map goes to `store` (None: no pictures wanted)."""
    bar = None
    if progress and len(files) > batch_size:
        import keras

        bar = keras.utils.Progbar(len(files), unit_name="image")
    rows, failed, scored = [], [], []
    for start in range(0, len(files), batch_size):
        batch = files[start : start + batch_size]
        for path, out in zip(batch, score(batch), strict=True):
            if isinstance(out, str):
                path = shown_path(path)
                rows.append([path, "", "", "", "", "", out])
                failed.append((path, out))
                continue
            row, amap = _scored_row(path, out, values)
            rows.append(row)
            if store is not None:
                store.add(path, amap)
            scored.append(path)
        if bar is not None:
            bar.add(len(batch))
    return rows, failed, scored


def _write_scores_csv(path: str, rows: list[list]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(rows)
    try:
        write_text_atomic(path, buffer.getvalue())
    except OSError as e:
        if e.filename is None:  # a failed write() names no file
            raise OSError(e.errno, e.strerror, path) from None
        raise


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
    _check_arguments(batch_size, output_dir, threshold, pixel_threshold)
    files, root = find_images(input_path, recursive)
    version_dir = resolve_saved_model(saved_model)
    ensure_output_dir("--output_dir", output_dir)  # before the slow load of the model
    loaded, encoded = load_signature(version_dir)
    metadata = read_metadata(version_dir) or {}
    pixels, channels = pixel_input(loaded, metadata)
    values = _decision_values(metadata, threshold, pixel_threshold)
    score = functools.partial(score_batch, encoded, pixels, channels)
    scores_csv = os.path.join(output_dir, "scores.csv")
    scale, pictures_error = None, None
    _remove_leftovers(output_dir)
    try:
        # The PID in the name lets the next run here remove it if this one is killed.
        scratch_dir = tempfile.TemporaryDirectory(dir=output_dir, prefix=f".maps-{os.getpid()}-")
        with scratch_dir as scratch:
            store = MapStore(scratch, len(files)) if heatmaps or masks or overlays else None
            rows, failed, scored = _score_files(files, score, values, store, batch_size, progress)
            _write_scores_csv(scores_csv, rows)
            if store is not None and store.paths:
                pictures = {"heatmaps": heatmaps, "masks": masks, "overlays": overlays}
                try:
                    scale = write_pictures(store, output_dir, root, values, metadata, **pictures)
                except OSError as e:
                    if e.errno not in DISK_FULL_ERRNOS:
                        raise
                    pictures_error = _no_room(e, output_dir, scores_csv)
    except OSError as e:
        if e.errno not in DISK_FULL_ERRNOS:
            raise
        raise DiskFull(_no_room(e, output_dir, None)) from None
    return {
        "saved_model": version_dir,
        "files": len(files),
        "images": len(scored),
        "failed": failed,
        "anomalous": sum(r[2] == "true" for r in rows),
        "threshold": values["threshold"] if math.isfinite(values["threshold"]) else None,
        "scores_csv": scores_csv,
        "heatmap_scale": scale,
        "pictures_error": pictures_error,
    }


def _remove_leftovers(output_dir: str) -> None:
    """Removes the scratch folders of earlier runs here that were killed; one line on stderr."""
    removed, reported = remove_stale_temporaries(output_dir, kinds=("maps",))
    if removed:
        print(
            f"removed {len(removed)} scratch folder(s) left by killed runs: {', '.join(removed)}",
            file=sys.stderr,
        )
    if reported:
        print(
            f"kept {len(reported)} old scratch folder(s) of unknown owner (delete them if no "
            f"mhp-predict is writing to {output_dir}): {', '.join(reported)}",
            file=sys.stderr,
        )


def _no_room(error: OSError, output_dir: str, scores_csv: str | None) -> str:
    """The message for an output that could not be written for want of room; `scores_csv` is
    the path of the scores.csv already written, if any."""
    where = shown_path(str(error.filename or output_dir))
    kept = (
        f"{scores_csv} is complete, with every score; some pictures are missing"
        if scores_csv
        else "No scores.csv was written"
    )
    return (
        f"could not write {where}: {error.strerror or os.strerror(error.errno)} (the device is "
        f"full or read-only). {kept}, and every file written is whole. Free some space (or pass "
        "another --output_dir) and run the same command again."
    )


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
    if summary.get("pictures_error"):
        print(f"error: {summary['pictures_error']}", file=sys.stderr)
    if not failed:
        return EXIT_PARTIAL if summary.get("pictures_error") else 0
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
