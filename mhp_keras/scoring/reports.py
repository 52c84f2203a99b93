"""Report figures (PNG): ROC curve, score histograms and a grid of example reconstructions.

They let a person check what the numbers in `metrics.json` mean: where the threshold falls between
the normal and anomalous scores, what each hypothesis reconstructs, and where the anomaly map
lights up. Figures are built on `matplotlib.figure.Figure` objects rather than pyplot, so nothing
is left in pyplot's global state by long runs and benchmarks, and every file is written atomically.

Heatmaps use ONE colour scale for the whole figure (see `heatmap_norm`). Min-max normalising each
map on its own would stretch the faint noise of a normal image to full heat and make every image
look equally anomalous. Pixels outside the region of interest (NaN in the map) are dimmed and get
no heat, and the region's edge is outlined, so what was scored is visible.
"""

from __future__ import annotations

import os
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from mhp_keras.io_utils import atomic_path  # noqa: E402
from mhp_keras.training.mechanism_names import NAMES  # noqa: E402

HEATMAP_CMAP = "jet"
OVERLAY_ALPHA = 0.5
# Scale percentiles: the floor comes from normal images only, so the bulk of a normal map is cold;
# the ceiling is a high percentile of all maps rather than the max, so one hot pixel does not wash
# out everything else.
LOW_PERCENTILE = 1.0
HIGH_PERCENTILE = 99.9
# Outside the region of interest the grey input is shown this bright, without heat; the region's
# edge is drawn in REGION_EDGE.
OUTSIDE_DIM = 0.35
REGION_EDGE = (0.0, 1.0, 1.0)
DPI = 100


def _save(fig: Figure, path: str) -> str:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _flat(values, dtype=np.float64) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(-1)


def plot_roc(path: str, labels, scores) -> str:
    """ROC curve with its AUROC; with a single class it writes a figure saying ROC is undefined."""
    labels, scores = _flat(labels, np.int64), _flat(scores)
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    if len(np.unique(labels)) > 1:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, linewidth=2)
        ax.set_title(f"ROC (image AUROC = {roc_auc_score(labels, scores):.4f})")
    else:
        ax.set_title("ROC undefined: one class only")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    return _save(fig, path)


def plot_score_histogram(path: str, labels, scores, threshold: float) -> str:
    """Normal and anomalous score histograms on shared bins, the threshold as a vertical line.

    A non-finite threshold (no validation set) is not drawn; non-finite scores are left out.
    """
    labels, scores = _flat(labels, np.int64), _flat(scores)
    finite = np.isfinite(scores)
    bins = np.histogram_bin_edges(scores[finite], bins=30) if finite.any() else 30
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for value, name, colour in ((0, "normal", "tab:blue"), (1, "anomalous", "tab:red")):
        chosen = scores[finite & (labels == value)]
        if chosen.size:
            ax.hist(chosen, bins=bins, alpha=0.6, color=colour, label=f"{name} (n={chosen.size})")
    if np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("anomaly score")
    ax.set_ylabel("images")
    ax.set_title("Test anomaly scores")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _spread(low: float, high: float) -> tuple[float, float]:
    """Widen a degenerate (constant-map) range so the normaliser never divides by zero."""
    if high > low:
        return low, high
    pad = 1e-6 * max(1.0, abs(low))
    return low - pad, high + pad


def _pixels(maps, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """All pixels of `maps` (an array, or a list of maps of different sizes) and those of the
    normal images (labels 0; all of them if no label says normal), flattened, float64."""
    if isinstance(maps, np.ndarray) or not isinstance(maps, (list, tuple)):
        maps = np.asarray(maps, dtype=np.float64)
        per_image = list(maps) if maps.ndim >= 2 else [maps]
    else:
        per_image = [np.asarray(m, dtype=np.float64) for m in maps]
    flat = np.concatenate([m.reshape(-1) for m in per_image]) if per_image else np.zeros([0])
    labels = None if labels is None else np.asarray(labels).reshape(-1)
    if labels is None or len(labels) != len(per_image) or not np.any(labels == 0):
        return flat, flat
    normal = [m.reshape(-1) for m, label in zip(per_image, labels) if label == 0]
    return flat, np.concatenate(normal)


def heatmap_norm(maps, labels=None, pixel_threshold: float | None = None) -> mcolors.Normalize:
    """One pixel-value -> [0, 1] scale for every heatmap of a figure.

    The image threshold is on the image score, not on pixels, so by default the scale comes from
    the maps themselves: vmin = LOW_PERCENTILE of the maps of normal images (all maps if no label
    says normal), vmax = HIGH_PERCENTILE of all maps. With a `pixel_threshold` the scale is
    two-sloped with that value at its midpoint, so cold turns to hot exactly there.
    """
    maps, normal = _pixels(maps, labels)
    finite = np.isfinite(maps)
    if not finite.any():
        return mcolors.Normalize(0.0, 1.0)
    low = float(np.percentile(normal[np.isfinite(normal)], LOW_PERCENTILE))
    high = float(np.percentile(maps[finite], HIGH_PERCENTILE))
    if pixel_threshold is None:
        return mcolors.Normalize(*_spread(low, high), clip=True)
    low, _ = _spread(min(low, pixel_threshold), pixel_threshold)
    _, high = _spread(pixel_threshold, max(high, pixel_threshold))
    return mcolors.TwoSlopeNorm(vcenter=pixel_threshold, vmin=low, vmax=high)


def pixel_anchor(threshold: float, aggregate: str, topk_fraction: float, pixels: int):
    """The pixel value that anchors the heat-map colour scale: the mean value a pixel of the
    aggregated set has in an image scored exactly at the threshold (None without a threshold)."""
    if threshold is None or not np.isfinite(threshold):
        return None
    if aggregate == "sum":
        return threshold / pixels
    if aggregate == "topk_sum":
        return threshold / max(1, int(np.ceil(pixels * topk_fraction)))
    return threshold  # mean and topk are means of pixels already


def heatmap_scale(
    maps,
    labels=None,
    *,
    threshold=None,
    aggregate: str = "sum",
    topk_fraction: float = 0.1,
    pixels: int | None = None,
) -> mcolors.Normalize:
    """THE colour scale of every heat map this project draws (reports, TensorBoard, mhp-predict):
    `heatmap_norm` over all the maps of a split or run, centred on the pixel value that matches
    the image threshold (`pixel_anchor`) when there is one. `maps` is [N, h, w], a list of maps
    of different sizes, or a flat sample of pixels with the map size given as `pixels`."""
    if pixels is None:  # the mean map size: maps of different sizes share one scale
        pixels = int(np.mean([np.asarray(m).size for m in maps])) if len(maps) else 1
    return heatmap_norm(maps, labels, pixel_anchor(threshold, aggregate, topk_fraction, pixels))


def model_heatmap_scale(model, maps, labels=None) -> mcolors.Normalize:
    """`heatmap_scale` with a ConAD's stored threshold and score aggregation."""
    return heatmap_scale(
        maps,
        labels,
        threshold=float(model.threshold.numpy()),
        aggregate=model.score_aggregate,
        topk_fraction=model.topk_fraction,
    )


def heatmap_rgb(maps, norm: mcolors.Normalize, cmap: str = HEATMAP_CMAP) -> np.ndarray:
    """Colours [..., h, w, 3] for maps [..., h, w] under a fixed norm: same value, same colour."""
    scaled = np.clip(np.ma.filled(norm(np.asarray(maps, dtype=np.float64)), 0.0), 0.0, 1.0)
    return colormaps[cmap](scaled)[..., :3]


def _as_rgb(images) -> np.ndarray:
    """[..., h, w, C] in [0, 1] with C 1 or 3 -> [..., h, w, 3]."""
    images = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]


def _resize_nearest(array: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of [H, W, ...] to [h, w, ...] (maps may be coarser than images)."""
    rows = np.arange(h) * array.shape[0] // h
    cols = np.arange(w) * array.shape[1] // w
    return array[rows][:, cols]


def overlay(image, heat_rgb, alpha: float = OVERLAY_ALPHA, outside=None) -> np.ndarray:
    """Heat colours blended over the grey input (a colour input would muddy the heat colours);
    where the bool map `outside` (outside the region of interest) is set, the input is dimmed
    and gets no heat, and the region's edge is outlined."""
    grey = _as_rgb(image).mean(axis=-1, keepdims=True)
    heat = _resize_nearest(heat_rgb, grey.shape[0], grey.shape[1])
    picture = (1.0 - alpha) * grey + alpha * heat
    if outside is not None and np.any(outside):
        outside = _resize_nearest(np.asarray(outside, bool), grey.shape[0], grey.shape[1])
        picture = np.where(outside[..., None], OUTSIDE_DIM * grey, picture)
        picture[find_boundaries(~outside, mode="inner", connectivity=1)] = REGION_EDGE
    return picture


def select_examples(scores, n: int) -> np.ndarray:
    """Indices of the ceil(n/2) most and floor(n/2) least anomalous images, by descending score."""
    order = np.argsort(-_flat(scores), kind="stable")
    if len(order) <= n:
        return order
    top, bottom = n - n // 2, n // 2
    return np.concatenate([order[:top], order[len(order) - bottom :]])


def _show(ax, picture, title: str | None = None, **kwargs) -> None:
    picture = np.asarray(picture)
    if picture.ndim == 3 and picture.shape[-1] == 1:
        picture = picture[..., 0]
    if picture.ndim == 2:
        kwargs.setdefault("cmap", "gray")
        kwargs.setdefault("vmin", 0.0)
        kwargs.setdefault("vmax", 1.0)
    ax.imshow(picture, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def _row_title(image_id, score: float, label: int, threshold: float) -> str:
    if isinstance(image_id, bytes):
        image_id = image_id.decode()
    verdict = "flagged" if score >= threshold else "passed"
    truth = "anomalous" if label else "normal"
    return f"{image_id}\nscore {score:.4g} ({verdict})\nlabel: {truth}"


def _column_names(k: int, with_mask: bool) -> list[str]:
    names = ["input", "best"] + [f"h{j}" for j in range(k)] + ["anomaly map"]
    return names + ["ground truth"] if with_mask else names


def plot_examples(
    path: str,
    images,
    best,
    hypotheses,
    maps,
    scores,
    labels,
    ids,
    threshold: float,
    masks=None,
    n: int = 8,
    norm: mcolors.Normalize | None = None,
    diversity=None,
    run_line: str | None = None,
) -> str:
    """One row per example: input, best hypothesis, all K hypotheses, heatmap overlay, [mask].

    `diversity` (per example, or None) labels each best guess with how far that image's heads
    differ from each other, over the best guess's error (`per_image_head_diversity`);
    `run_line` is a second title line, the run's mechanism diagnostics (`run_summary_line`).

    Rows are the most anomalous then the least anomalous images (`select_examples`). Every row
    shares one heat-map scale: `norm` (the split's `heatmap_scale`), or without it
    `heatmap_scale` of the given maps.
    Shapes: images/best [N, h, w, C] in [0, 1], hypotheses [N, K, h, w, C] (or None: tiled
    scoring stitches the best guess only), maps [N, h', w'], masks [N, h, w] or [N, h, w, 1];
    each may also be a list of per-image arrays of different sizes.
    """
    scores, labels = _flat(scores), _flat(labels, np.int64)
    maps = [np.asarray(m, dtype=np.float64) for m in maps]
    maps = [m[..., 0] if m.ndim == 3 else m for m in maps]
    if norm is None:
        norm = heatmap_scale(maps, labels, threshold=threshold)
    chosen = select_examples(scores, n)
    k = 0 if hypotheses is None else np.asarray(hypotheses[0]).shape[0]
    names = _column_names(k, masks is not None)
    fig = Figure(figsize=(1.35 * len(names) + 1.0, 1.6 * len(chosen) + 0.6), layout="constrained")
    axes = fig.subplots(len(chosen), len(names), squeeze=False)
    for row, i in enumerate(chosen):
        cells = [_as_rgb(images[i]), _as_rgb(best[i])]
        if k:
            cells += list(_as_rgb(hypotheses[i]))
        cells.append(overlay(images[i], heatmap_rgb(maps[i], norm), outside=np.isnan(maps[i])))
        if masks is not None:
            cells.append(np.asarray(masks[i], dtype=np.float64))
        for col, picture in enumerate(cells):
            title = names[col] if row == 0 else None
            if col == 0:
                title = _row_title(ids[i], scores[i], labels[i], threshold)
            elif col == 1 and diversity is not None and k > 1:
                title = "\n".join(filter(None, [title, f"heads differ {diversity[i]:.2f}"]))
            _show(axes[row, col], picture, title)
    colourbar = ScalarMappable(norm=norm, cmap=HEATMAP_CMAP)
    fig.colorbar(colourbar, ax=axes, shrink=0.6, label="anomaly map (pixel score)")
    title = f"Most (top) and least anomalous test images; threshold {threshold:.4g}"
    # Wrapped to the figure's width (about 9 title characters an inch), which a grid of few
    # heads keeps narrow.
    width = max(40, int(fig.get_figwidth() * 9))
    lines = [title, *textwrap.wrap(run_line or "", width)]
    fig.suptitle("\n".join(lines))
    return _save(fig, path)


def run_summary_line(mechanism: dict | None, weights: dict | None) -> str | None:
    """The run's mechanism diagnostics (the last epoch's) and the kept epoch, as one line for the
    example figure; None when the run recorded neither."""
    parts = [f"{n} {mechanism[n]:.3g}" for n in NAMES if (mechanism or {}).get(n) is not None]
    if parts:
        parts[-1] += " (last epoch)"
    if (weights or {}).get("kept") == "best_val":
        parts.append(f"weights of epoch {weights['epoch']} (lowest val_recon)")
    return ", ".join(parts) or None


def write_report(
    report_dir: str,
    *,
    labels,
    scores,
    threshold: float,
    examples: dict,
    norm: mcolors.Normalize,
    run_line: str | None = None,
) -> list[str]:
    """Writes roc.png, histogram.png and examples.png under `report_dir`; returns their paths.

    `labels` and `scores` are the whole split's; `examples` holds the images to show, with the
    keys of `plot_examples` (images, best, hypotheses, maps, scores, labels, ids, masks); `norm`
    is the split's heat-map scale (`heatmap_scale`).
    """
    os.makedirs(report_dir, exist_ok=True)
    return [
        plot_roc(os.path.join(report_dir, "roc.png"), labels, scores),
        plot_score_histogram(os.path.join(report_dir, "histogram.png"), labels, scores, threshold),
        plot_examples(
            os.path.join(report_dir, "examples.png"),
            threshold=threshold,
            norm=norm,
            run_line=run_line,
            **examples,
        ),
    ]
