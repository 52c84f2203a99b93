"""Anomaly-detection metrics: image AUROC/AP/F1, pixel AUROC, AUPRO and decision thresholds.

Pure numpy/scikit-learn functions on plain arrays, so the end-of-training evaluation, the
evaluation callback and the benchmark all compute every number the same way, and the tests can
check each one against hand-worked cases.

Conventions everywhere: label 1 = anomalous, a higher score = more anomalous, and an image is
predicted anomalous when `score >= threshold`. A map pixel that is NaN lies outside the region
of interest (`mhp_keras.scoring.regions`): the pixel metrics leave it out, whatever its mask.
Metrics that are undefined for the given data (e.g. AUROC with a single class) come back as NaN
instead of raising, so one degenerate split never aborts a whole benchmark; the JSON writer turns
NaN into null.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

NAN = float("nan")
# 8-connectivity, as in the official MVTec AD evaluation code: diagonal neighbours belong to the
# same defect region.
_REGION_STRUCTURE = np.ones((3, 3), dtype=int)


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1).astype(bool)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise ValueError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    if labels.size == 0:
        raise ValueError("no scores to evaluate")
    return labels, scores


def _both_classes(labels: np.ndarray) -> bool:
    return bool(labels.any() and not labels.all())


def _f1_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F1 at every distinct score used as threshold, thresholds in ascending order.

    scikit-learn's curve gives precision and recall as float ratios; F1 is computed from the
    integer counts they come from (TP = recall * positives, predicted = TP / precision), so that
    equal F1s are exactly equal and the tie rule of `f1_optimal_threshold` holds.
    """
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    # The last point (precision 1, recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    positives = int(labels.sum())
    tp = np.rint(recall * positives)
    predicted = np.rint(np.divide(tp, precision, out=np.zeros_like(tp), where=tp > 0))
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted positives + actual positives).
    return thresholds, 2.0 * tp / (predicted + positives)


def f1_optimal_threshold(labels, scores) -> float:
    """The score threshold (`score >= t` is anomalous) that maximises F1 on these labels.

    Candidates are the observed scores; on a tie the highest threshold wins (fewest alarms).
    NaN when there is no anomalous image, since F1 is then 0 for every threshold.
    """
    return image_metrics(labels, scores)["f1_threshold"]


def image_metrics(labels, scores) -> dict:
    """Image-level AUROC, average precision, best F1 and the threshold that achieves it.

    With a single class present AUROC and AP are undefined and come back as NaN; F1-max is NaN
    only when there is no anomalous image (all-anomalous data still has a meaningful F1).
    """
    labels, scores = _labels_scores(labels, scores)
    out = {"image_auroc": NAN, "image_ap": NAN, "f1_max": NAN, "f1_threshold": NAN}
    if _both_classes(labels):
        out["image_auroc"] = float(roc_auc_score(labels, scores))
        out["image_ap"] = float(average_precision_score(labels, scores))
    if labels.any():
        thresholds, f1 = _f1_curve(labels, scores)
        best = f1.size - 1 - int(np.argmax(f1[::-1]))  # the highest of the best thresholds
        out["f1_max"] = float(f1[best])
        out["f1_threshold"] = float(thresholds[best])
    return out


def threshold_from_normal(scores, quantile: float = 0.99) -> float:
    """A quantile of normal-only (validation) scores: ~(1 - quantile) false-alarm rate on normals.

    Needs no anomalous examples, which is the point of an unsupervised detector.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("threshold_from_normal needs at least one normal validation score")
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {quantile}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("threshold_from_normal got non-finite scores")
    return float(np.quantile(scores, quantile))


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den > 0 else empty


def classification_at_threshold(labels, scores, threshold: float) -> dict:
    """Confusion-matrix rates when `score >= threshold` is called anomalous.

    Undefined ratios: precision is 0 with no positive prediction (scikit-learn's convention);
    recall/tpr are NaN without anomalous images and fpr NaN without normal ones.
    Counted here rather than by sklearn's confusion_matrix: four sums, and these NaN conventions.
    """
    labels, scores = _labels_scores(labels, scores)
    predicted = scores >= threshold
    tp = int(np.sum(predicted & labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    precision = _ratio(tp, tp + fp, 0.0)
    recall = _ratio(tp, tp + fn, NAN)
    f1 = NAN if np.isnan(recall) else _ratio(2 * precision * recall, precision + recall, 0.0)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": float((tp + tn) / labels.size),
        "fpr": _ratio(fp, fp + tn, NAN),
        "tpr": recall,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def score_distribution(scores, threshold: float) -> dict:
    """Summary of one group of image scores and how many of them `threshold` flags.

    For a test split without anomalous images, where AUROC is undefined, this is what can be said:
    where the normal scores lie relative to the threshold, and the false-alarm rate it gives
    (`flagged_fraction`, the share with `score >= threshold`). Quantiles are numpy's linear
    interpolation; every value is NaN for an empty group.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    keys = ("min", "median", "p95", "p99", "max", "flagged_fraction")
    if scores.size == 0:
        return {"n": 0, **dict.fromkeys(keys, NAN)}
    low, median, p95, p99, high = np.quantile(scores, [0.0, 0.5, 0.95, 0.99, 1.0])
    return {
        "n": int(scores.size),
        "min": float(low),
        "median": float(median),
        "p95": float(p95),
        "p99": float(p99),
        "max": float(high),
        "flagged_fraction": float(np.mean(scores >= threshold)),
    }


def image_pairs(masks, maps) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per image, its mask (bool [h, w]) and map (float64 [h, w]).

    Takes arrays [N, h, w] (a trailing channel axis of size 1 is dropped, a single [h, w] image
    is accepted) or lists of per-image arrays, whose sizes may differ (native-resolution maps).
    """

    def per_image(values, dtype):
        if isinstance(values, (list, tuple)):
            values = [np.asarray(v, dtype=dtype) for v in values]
        else:
            values = np.asarray(values, dtype=dtype)
            values = values[None] if values.ndim == 2 else values
        return [v[..., 0] if v.ndim == 3 and v.shape[-1] == 1 else v for v in values]

    masks, maps = per_image(masks, np.float64), per_image(maps, np.float64)
    if len(masks) != len(maps) or any(
        a.shape != b.shape or a.ndim != 2 for a, b in zip(masks, maps)
    ):
        shapes = [(a.shape, b.shape) for a, b in zip(masks, maps)][:3]
        raise ValueError(
            f"masks and maps must pair up as [h, w] images of equal size: {len(masks)} masks, "
            f"{len(maps)} maps, first shapes {shapes}"
        )
    return [m > 0.5 for m in masks], maps


def _flat(images: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([i.reshape(-1) for i in images]) if images else np.zeros([0])


def _inspected(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """The flattened masks and maps of the pixels inside the region of interest (finite)."""
    masks, maps = image_pairs(masks, maps)
    flat_masks, flat_maps = _flat(masks), _flat(maps)
    inside = ~np.isnan(flat_maps)
    return flat_masks[inside], flat_maps[inside]


def pixel_auroc(masks, maps) -> float:
    """AUROC over all inspected pixels of all images; NaN without both anomalous and normal
    pixels."""
    flat_masks, flat_maps = _inspected(masks, maps)
    if not _both_classes(flat_masks):
        return NAN
    return float(roc_auc_score(flat_masks, flat_maps))


def pixel_decisions(masks, maps, pixel_threshold: float) -> dict:
    """Pixel F1 and IoU of the decision `map >= pixel_threshold` against the masks, over all
    pixels of all images (one confusion count, as pixel AUROC pools them). NaN where a ratio has
    no pixels at all to count (scikit-learn's f1_score and jaccard_score default to 0 and warn,
    which is why the counts are summed here)."""
    flat_masks, flat_maps = _inspected(masks, maps)
    truth, predicted = flat_masks.astype(bool), flat_maps >= pixel_threshold
    tp = int(np.sum(truth & predicted))
    fp = int(np.sum(~truth & predicted))
    fn = int(np.sum(truth & ~predicted))
    return {
        "pixel_threshold": float(pixel_threshold),
        "pixel_f1": _ratio(2 * tp, 2 * tp + fp + fn, NAN),
        "pixel_iou": _ratio(tp, tp + fp + fn, NAN),
        "pixel_precision": _ratio(tp, tp + fp, NAN),
        "pixel_recall": _ratio(tp, tp + fn, NAN),
    }


def _pixel_weights(masks: list[np.ndarray], outside=None) -> tuple[np.ndarray, np.ndarray, int]:
    """Per pixel (flattened over all images): its FPR increment when it crosses the threshold,
    its PRO increment, and the number of regions.

    A normal pixel adds 1/#normal to the FPR; a pixel of region r adds 1/(|r| * #regions) to the
    PRO, so summing the weights of the pixels above a threshold gives exactly FPR and the mean
    per-region overlap at that threshold. Pixels flagged in the flat `outside` (outside the
    region of interest) are neither normal nor anomalous: weight zero.
    """
    regions = []
    n_regions = 0
    for mask in masks:
        # Regions are per image; offset the ids so they are unique across the dataset.
        labelled, count = ndimage.label(mask, structure=_REGION_STRUCTURE)
        regions.append(np.where(labelled > 0, labelled + n_regions, 0).reshape(-1))
        n_regions += count
    regions = np.concatenate(regions) if regions else np.zeros([0], np.int64)
    flat_masks = _flat(masks).astype(bool)
    sizes = np.bincount(regions, minlength=n_regions + 1)
    pro_w = np.zeros(regions.shape, dtype=np.float64)
    if n_regions:
        pro_w[flat_masks] = 1.0 / (sizes[regions[flat_masks]] * n_regions)
    normal = ~flat_masks if outside is None else ~flat_masks & ~outside
    fpr_w = np.where(normal, 1.0 / max(int(normal.sum()), 1), 0.0)
    return fpr_w, pro_w, n_regions


def pro_curve(masks, maps, num_thresholds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) points of the per-region-overlap curve, FPR ascending, starting at (0, 0).

    Hand-written: neither scikit-learn nor scipy has a per-region-overlap curve.
    `num_thresholds=None` is exact: every distinct map value is a threshold (one sort of all
    pixels). An int uses that many evenly spaced thresholds over [min, max] of the maps instead,
    which is cheaper for huge inputs and an under-estimate of the exact curve's area.
    """
    masks, maps = image_pairs(masks, maps)
    # Pixels outside the region of interest (NaN) belong to no region and are never normal:
    # their weights are zero, and they sit below every threshold.
    masks = [m & ~np.isnan(v) for m, v in zip(masks, maps, strict=True)]
    values = _flat(maps)
    outside = np.isnan(values)
    fpr_w, pro_w, _ = _pixel_weights(masks, outside)
    values = np.where(outside, -np.inf, values)
    if num_thresholds is None:
        thresholds, bins = np.unique(values, return_inverse=True)
    else:
        if num_thresholds < 2:
            raise ValueError("num_thresholds must be at least 2")
        finite = values[~outside]
        thresholds = np.linspace(finite.min(), finite.max(), int(num_thresholds))
        # A pixel is above threshold t_j (value >= t_j) for every j <= its bin.
        bins = np.searchsorted(thresholds, values, side="right") - 1
    n = thresholds.size
    # Sum the weights per threshold bin, then accumulate from the highest threshold down.
    fpr = np.cumsum(np.bincount(bins.reshape(-1), fpr_w.reshape(-1), n)[::-1])
    pro = np.cumsum(np.bincount(bins.reshape(-1), pro_w.reshape(-1), n)[::-1])
    return np.r_[0.0, fpr], np.r_[0.0, pro]


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoidal area under y(x) on [0, x_max], interpolating the curve at exactly x_max.

    x must be non-decreasing (a cumulative FPR is); repeated x values are vertical jumps, which
    add no area. Not sklearn.metrics.auc, which has no upper limit to interpolate at.
    """
    end = int(np.searchsorted(x, x_max, side="left"))  # first point at or beyond x_max
    if end < x.size:
        x0, x1, y0, y1 = x[end - 1], x[end], y[end - 1], y[end]
        x = np.r_[x[:end], x_max]
        y = np.r_[y[:end], y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def aupro(masks, maps, fpr_limit: float = 0.3, num_thresholds: int | None = None) -> float:
    """Area under the PRO curve up to `fpr_limit`, over `fpr_limit` (MVTec AD, Bergmann et al.).

    Regions are the 8-connected components of each ground-truth mask; every region counts equally
    whatever its size, which is why AUPRO rewards finding small defects more than pixel AUROC does.
    FPR counts the normal pixels (mask 0) of all images, anomalous images included. A perfect map
    scores 1.0. NaN when there is no anomalous region or no normal pixel.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if not _both_classes(_inspected(masks, maps)[0]):
        return NAN
    fpr, pro = pro_curve(masks, maps, num_thresholds)
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit
