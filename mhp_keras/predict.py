"""Scores image files with an exported ConAD SavedModel.

    python -m mhp_keras.predict --saved_model=export/conad --input=images/ --output_dir=out

`--saved_model` is a version directory (`export/conad/3`) or a model directory, in which case the
highest integer version is used. `--input` is one image file or a folder of PNG / JPEG / BMP files
(sorted; subfolders with `--recursive`). Images go through the `serving_bytes` signature, so
decoding, channel conversion and resizing are the exported graph's, the same as in training.

Writes `OUTPUT_DIR/scores.csv` (path, score, is_anomalous, winner_index) and, with `--heatmaps`,
one PNG per image in `OUTPUT_DIR/heatmaps/` (named after the image's path relative to the input
folder). Heatmaps share one colour scale over the whole run, never a per-image min-max, so colours
compare across images: the project's one rule (`mhp_keras.reports.heatmap_scale`) over all
anomaly-map pixels of the run (a subsample for large runs), centred on the model's threshold,
recorded in `OUTPUT_DIR/heatmap_scale.json`. Bad input
(missing path, empty folder, undecodable file, no SavedModel, a bad flag) prints one paragraph and
exits 2 (see mhp_keras/cli.py).
"""

from __future__ import annotations

import collections
import csv
import io
import math
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # a CLI: keep TF's C++ start-up logs quiet

import matplotlib.colors as mcolors
import numpy as np
import tensorflow as tf
from absl import flags

from mhp_keras.cli import ensure_output_dir, run_app
from mhp_keras.data.image_files import IMAGE_EXTENSIONS
from mhp_keras.errors import DataError, UserError
from mhp_keras.export import existing_versions, read_metadata
from mhp_keras.io_utils import atomic_path, write_json_atomic, write_text_atomic
from mhp_keras.reports import HEATMAP_CMAP, heatmap_rgb, heatmap_scale

SIGNATURE = "serving_bytes"
MIN_HEATMAP_SIDE = 128  # small maps are enlarged (nearest neighbour) to at least this side
_SCALE_SAMPLE = 2_000_000  # pixels used to estimate the run's colour scale

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "SavedModel version dir, or model dir (highest version).")
flags.DEFINE_string("input", None, "An image file or a folder of images (png, jpg, jpeg, bmp).")
flags.DEFINE_string("output_dir", None, "Where scores.csv and heatmaps/ are written.")
flags.DEFINE_integer("batch_size", 32, "Images per call of the SavedModel.", lower_bound=1)
flags.DEFINE_boolean("heatmaps", True, "Write one anomaly-map PNG per image into heatmaps/.")
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
    try:
        loaded = tf.saved_model.load(version_dir)
    except Exception as e:  # noqa: BLE001 - any load failure is a bad --saved_model for the user
        raise DataError(
            f"--saved_model={version_dir} could not be loaded as a SavedModel "
            f"({type(e).__name__}: {_short(e)}); expected a directory written by "
            "mhp_keras.export.export_saved_model."
        ) from None
    if SIGNATURE not in loaded.signatures:
        raise DataError(
            f"--saved_model={version_dir} has signatures {sorted(loaded.signatures)} but no "
            f"'{SIGNATURE}'; expected a ConAD export from mhp_keras.export.export_saved_model."
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


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(
            f"{path} could not be read ({e.strerror}); expected a readable image file."
        ) from None


# -- scoring -------------------------------------------------------------------------------------


def _run_batch(signature, paths: list[str]) -> dict:
    contents = [_read(p) for p in paths]
    try:
        out = signature(image_bytes=tf.constant(contents, dtype=tf.string))
    except tf.errors.InvalidArgumentError as e:
        if len(paths) > 1:  # find the file at fault, one at a time
            for path in paths:
                _run_batch(signature, [path])
        where = paths[0] if len(paths) == 1 else f"the batch {paths[0]} ... {paths[-1]}"
        raise DataError(
            f"{where} could not be decoded as an image ({_short(e)}); expected a valid PNG, "
            "JPEG or BMP file. Remove or replace it and run again."
        ) from None
    return {k: v.numpy() for k, v in out.items()}


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


def predict(
    saved_model: str,
    input_path: str,
    output_dir: str,
    batch_size: int = 32,
    heatmaps: bool = True,
    recursive: bool = False,
    progress: bool = True,
) -> dict:
    """Scores the images under `input_path`; writes scores.csv and heatmaps; returns a summary."""
    if batch_size < 1:
        raise UserError(f"--batch_size={batch_size}: expected a positive integer.")
    if not output_dir:
        raise UserError("--output_dir is required: the folder for scores.csv and heatmaps/.")
    files, root = find_images(input_path, recursive)
    version_dir = resolve_saved_model(saved_model)
    ensure_output_dir("--output_dir", output_dir)  # before the slow load of the model
    _, signature = load_signature(version_dir)
    metadata = read_metadata(version_dir) or {}

    bar = None
    if progress and len(files) > batch_size:
        import keras

        bar = keras.utils.Progbar(len(files), unit_name="image")
    rows = []
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".maps-") as scratch:
        maps = None  # a disk-backed [N, S, S] array, so large runs need no RAM for the maps
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            out = _run_batch(signature, batch)
            for i, path in enumerate(batch):
                rows.append(
                    [
                        path,
                        repr(float(out["anomaly_score"][i])),
                        "true" if out["is_anomalous"][i] else "false",
                        int(out["winner_index"][i]),
                    ]
                )
            if heatmaps:
                if maps is None:
                    maps = np.lib.format.open_memmap(
                        os.path.join(scratch, "maps.npy"),
                        mode="w+",
                        dtype=np.float32,
                        shape=(len(files),) + out["anomaly_map"].shape[1:],
                    )
                maps[start : start + len(batch)] = out["anomaly_map"]
            if bar is not None:
                bar.add(len(batch))

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "score", "is_anomalous", "winner_index"])
        writer.writerows(rows)
        write_text_atomic(os.path.join(output_dir, "scores.csv"), buffer.getvalue())

        scale = None
        if heatmaps:
            flat = maps.reshape(-1)
            sample = np.asarray(flat[:: max(1, flat.size // _SCALE_SAMPLE)], np.float64)
            threshold = metadata.get("threshold")
            norm = heatmap_scale(
                sample,
                pixels=maps[0].size,
                threshold=threshold,
                aggregate=metadata.get("score_aggregate", "sum"),
                topk_fraction=metadata.get("topk_fraction", 0.1),
            )
            scale = {
                "low": float(norm.vmin),
                "high": float(norm.vmax),
                "center": float(norm.vcenter) if hasattr(norm, "vcenter") else None,
                "rule": (
                    "one colour scale for the run (mhp_keras.reports.heatmap_scale): from a low "
                    "to a high percentile of all anomaly-map pixels (per-pixel NLL), with the "
                    "pixel value matching the model's threshold at the middle of the colour map"
                ),
                "colormap": HEATMAP_CMAP,
                "model_threshold": threshold,
            }
            for i, name in enumerate(_heatmap_names(files, root)):
                _write_png(os.path.join(output_dir, "heatmaps", name), colourise(maps[i], norm))
            write_json_atomic(os.path.join(output_dir, "heatmap_scale.json"), scale)
            del maps, flat, sample  # release the memmap before its folder is removed

    flagged = sum(r[2] == "true" for r in rows)
    return {
        "saved_model": version_dir,
        "images": len(rows),
        "anomalous": flagged,
        "threshold": metadata.get("threshold"),
        "scores_csv": os.path.join(output_dir, "scores.csv"),
        "heatmap_scale": scale,
    }


def main(argv):
    del argv  # positional arguments are refused while the flags are parsed
    summary = predict(
        FLAGS.saved_model,
        FLAGS.input,
        FLAGS.output_dir,
        batch_size=FLAGS.batch_size,
        heatmaps=FLAGS.heatmaps,
        recursive=FLAGS.recursive,
    )
    threshold = summary["threshold"]
    note = "" if threshold is not None else " (the model has no threshold: nothing is flagged)"
    print(
        f"scored {summary['images']} images with {summary['saved_model']}: "
        f"{summary['anomalous']} anomalous{note}; wrote {summary['scores_csv']}"
    )
    return 0


def cli():
    """Console-script entry point (`mhp-predict`); a `UserError` from `main` exits 2."""
    run_app(main)


if __name__ == "__main__":
    cli()
