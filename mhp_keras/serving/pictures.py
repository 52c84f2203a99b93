"""`mhp-predict`'s pictures: one heat map, defect mask and overlay PNG per scored image, on one
colour scale for the whole run (recorded in heatmap_scale.json), so colours compare across images.

The anomaly maps wait on disk (`MapStore`) until every image is scored, because the run's colour
scale needs all of them first; a large run thus needs no RAM for its maps.

Heat maps and overlays are pictures for people, so they are drawn at most MAX_PICTURE_SIDE pixels
on their longest side: a larger one is downscaled by the smallest integer factor that fits, by
taking every n-th pixel of the image and of its map (no resampling, so colours stay the map's own
values). That bounds their memory at any image size (an overlay is drawn in float64, 24 bytes a
pixel per layer). Masks are data and always keep the map's full size; pictures of images up to
MAX_PICTURE_SIDE are unchanged.
"""

from __future__ import annotations

import collections
import errno
import math
import os

import matplotlib.colors as mcolors
import numpy as np
import tensorflow as tf
from skimage.segmentation import find_boundaries

from mhp_keras.data.image_files import decode_on_host
from mhp_keras.data.pipeline import convert_channels
from mhp_keras.io_utils import atomic_path, write_json_atomic
from mhp_keras.scoring.reports import HEATMAP_CMAP, heatmap_rgb, heatmap_scale

MAX_PICTURE_SIDE = 4096  # heat maps and overlays larger than this are downscaled to fit
MIN_HEATMAP_SIDE = 128  # small maps are enlarged (nearest neighbour) to at least this side
_SCALE_SAMPLE = 2_000_000  # pixels used to estimate the run's colour scale
_SCALE_RULE = (
    "one colour scale for the run (mhp_keras.scoring.reports.heatmap_scale): from a low to a high "
    "percentile of all anomaly-map pixels (per-pixel NLL), with the pixel value matching the "
    "image threshold at the middle of the colour map"
)


class MapStore:
    """The anomaly maps of a run's scored images, saved in folder `scratch`, with a subsample of
    their pixels (about _SCALE_SAMPLE over `total_files` images) for the run's colour scale."""

    def __init__(self, scratch: str, total_files: int):
        self.scratch = scratch
        self.total_files = total_files
        self.paths: list[str] = []
        self._sample: list[np.ndarray] = []
        self._sizes: list[int] = []

    def add(self, path: str, amap: np.ndarray) -> None:
        # Not np.save: its short write on a full disk is an OSError without an errno.
        with open(os.path.join(self.scratch, f"{len(self.paths)}.npy"), "wb") as f:
            amap = np.ascontiguousarray(amap)
            np.lib.format.write_array_header_2_0(f, np.lib.format.header_data_from_array_1_0(amap))
            f.write(amap.data)
        step = max(1, amap.size * self.total_files // _SCALE_SAMPLE)
        self._sample.append(amap.reshape(-1)[::step].astype(np.float64))
        self._sizes.append(amap.size)
        self.paths.append(path)

    def load(self, index: int) -> np.ndarray:
        return np.load(os.path.join(self.scratch, f"{index}.npy"))

    def colour_scale(self, threshold: float, metadata: dict) -> mcolors.Normalize:
        """The project's heat-map scale over the sampled pixels, centred on `threshold`."""
        return heatmap_scale(
            np.concatenate(self._sample),
            pixels=int(np.mean(self._sizes)),
            threshold=threshold,
            aggregate=metadata.get("score_aggregate", "sum"),
            topk_fraction=metadata.get("topk_fraction", 0.1),
        )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def write_pictures(
    store: MapStore,
    output_dir: str,
    root: str,
    values: dict,
    metadata: dict,
    *,
    heatmaps: bool,
    masks: bool,
    overlays: bool,
) -> dict:
    """Writes the chosen PNGs of every stored map into `output_dir` (named after each image's path
    relative to `root`) and heatmap_scale.json; returns the scale's record.

    `values` holds the run's `threshold` and `pixel_threshold` (math.inf: none).
    """
    norm = store.colour_scale(values["threshold"], metadata)
    scale = {
        "low": float(norm.vmin),
        "high": float(norm.vmax),
        "center": float(norm.vcenter) if hasattr(norm, "vcenter") else None,
        "rule": _SCALE_RULE,
        "colormap": HEATMAP_CMAP,
        "model_threshold": metadata.get("threshold"),
        "threshold": _finite(values["threshold"]),
        "pixel_threshold": _finite(values["pixel_threshold"]),
    }
    for i, name in enumerate(heatmap_names(store.paths, root)):
        amap = store.load(i)
        mask = amap >= values["pixel_threshold"]
        if heatmaps:
            rows, cols = picture_pixels(amap.shape)
            small = amap if len(rows) == amap.shape[0] else amap[rows][:, cols]
            write_png(os.path.join(output_dir, "heatmaps", name), colourise(small, norm))
        if masks:
            mask_png = (mask[..., None] * 255).astype(np.uint8)
            write_png(os.path.join(output_dir, "masks", name), mask_png)
        if overlays:
            picture = overlay_png(store.paths[i], amap, mask, norm)
            write_png(os.path.join(output_dir, "overlays", name), picture)
    write_json_atomic(os.path.join(output_dir, "heatmap_scale.json"), scale)
    return scale


def shown_path(path: str) -> str:
    """`path` as text that can be written anywhere (scores.csv, stderr, an output file name): a
    name that is not valid UTF-8 (Python holds its bytes as surrogates) is spelled with its bytes
    escaped as the file system gave them, `bad\\xff.png`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def heatmap_names(files: list[str], root: str) -> list[str]:
    """heatmaps/<relative path without extension>.png; the extension is kept where stems clash.
    Names that are not valid UTF-8 are escaped (`shown_path`), so every name can be written."""
    stems = [os.path.splitext(shown_path(os.path.relpath(f, root)))[0] for f in files]
    counts = collections.Counter(stems)
    return [
        (shown_path(os.path.relpath(f, root)) if counts[s] > 1 else s) + ".png"
        for f, s in zip(files, stems, strict=True)
    ]


def colourise(amap: np.ndarray, norm: mcolors.Normalize) -> np.ndarray:
    """An [h, w] map to an RGB uint8 image on the run's fixed scale `norm`, enlarged if small
    (by np.repeat rather than an image resize: exact nearest-neighbour blocks, no resampling)."""
    rgb = np.round(heatmap_rgb(amap, norm) * 255).astype(np.uint8)
    factor = max(1, math.ceil(MIN_HEATMAP_SIDE / max(amap.shape)))
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)


def picture_pixels(shape) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) kept of an [h, w, ...] array in its picture: all up to MAX_PICTURE_SIDE,
    else every n-th of both (one n keeps the aspect), the smallest n that fits."""
    step = max(1, math.ceil(max(shape[0], shape[1]) / MAX_PICTURE_SIDE))
    return np.arange(0, shape[0], step), np.arange(0, shape[1], step)


def write_png(path: str, rgb: np.ndarray) -> None:
    """Writes uint8 [h, w, c] `rgb` as a PNG at `path` atomically, creating its folder.

    Written by Python rather than tf.io.write_file, whose failures are TF errors without an
    errno: a full disk must stay an OSError naming `path` (see `serving.predict`)."""
    data = tf.io.encode_png(rgb).numpy()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path, suffix=".png") as tmp, open(tmp, "wb") as f:
            f.write(data)
    except OSError as e:
        if e.filename is None:  # a failed write() names no file
            raise OSError(e.errno, e.strerror or os.strerror(e.errno or errno.EIO), path) from e
        raise


def outline(mask: np.ndarray) -> np.ndarray:
    """The border pixels of a boolean mask: mask pixels with a 4-neighbour outside it (the image
    edge does not count as outside)."""
    return find_boundaries(np.asarray(mask, dtype=bool), mode="inner", connectivity=1)


def overlay_png(path: str, amap: np.ndarray, mask: np.ndarray, norm) -> np.ndarray:
    """The image at its own size (downscaled to MAX_PICTURE_SIDE if larger), greyed, with the
    heat map blended over it and the mask's outline drawn in white: uint8 RGB."""
    from mhp_keras.scoring.reports import overlay

    image, _ = decode_on_host(path)
    height, width = image.shape[:2]
    rows, cols = picture_pixels(image.shape)
    if len(rows) < height or len(cols) < width:
        # Downscale the image and bring its map to the picture's size before anything is drawn,
        # so no full-size float picture is ever made.
        image = image[rows][:, cols]
        map_rows, map_cols = rows * amap.shape[0] // height, cols * amap.shape[1] // width
        amap = amap[map_rows][:, map_cols]
        mask = mask[map_rows][:, map_cols]
    rgb = convert_channels(tf.constant(image), 3).numpy()
    heat = heatmap_rgb(amap, norm)
    picture = overlay(rgb, heat, outside=np.isnan(amap))  # dimmed outside the region
    rows = np.arange(rgb.shape[0]) * mask.shape[0] // rgb.shape[0]
    cols = np.arange(rgb.shape[1]) * mask.shape[1] // rgb.shape[1]
    picture[outline(mask[rows][:, cols])] = 1.0
    return np.round(np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8)
