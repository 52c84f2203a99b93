"""Anomaly-detection metrics: image AUROC/AP/F1, pixel AUROC, AUPRO and decision thresholds.

Pure numpy/scikit-learn functions on plain arrays, so the end-of-training evaluation, the
evaluation callback and the benchmark all compute every number the same way, and the tests can
check each one against hand-worked cases.

Conventions everywhere: label 1 = anomalous, a higher score = more anomalous, and an image is
predicted anomalous when `score >= threshold`. Metrics that are undefined for the given data
(e.g. AUROC with a single class) come back as NaN instead of raising, so one degenerate split never
aborts a whole benchmark; the JSON writer turns NaN into null.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

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
    """F1 at every distinct score used as threshold, thresholds in descending order."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    # Tied scores are all predicted together, so only the last index of each run is a valid cut.
    last_of_run = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    tp = np.cumsum(sorted_labels)[last_of_run]
    predicted = np.flatnonzero(last_of_run) + 1
    # F1 = 2TP / (2TP + FP + FN) = 2TP / (predicted positives + actual positives).
    f1 = 2.0 * tp / (predicted + labels.sum())
    return sorted_scores[last_of_run], f1


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
        best = int(np.argmax(f1))
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


def _masks_maps(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Both as [N, h, w]; a trailing channel axis of size 1 is dropped."""
    masks, maps = np.asarray(masks), np.asarray(maps, dtype=np.float64)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must both be [N, h, w]")
    return masks > 0.5, maps


def pixel_auroc(masks, maps) -> float:
    """AUROC over all pixels of all images; NaN without both anomalous and normal pixels."""
    masks, maps = _masks_maps(masks, maps)
    if not _both_classes(masks):
        return NAN
    return float(roc_auc_score(masks.reshape(-1), maps.reshape(-1)))


def _pixel_weights(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per pixel: its FPR increment when it crosses the threshold, its PRO increment, #regions.

    A normal pixel adds 1/#normal to the FPR; a pixel of region r adds 1/(|r| * #regions) to the
    PRO, so summing the weights of the pixels above a threshold gives exactly FPR and the mean
    per-region overlap at that threshold.
    """
    regions = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        # Regions are per image; offset the ids so they are unique across the dataset.
        labelled, count = ndimage.label(mask, structure=_REGION_STRUCTURE)
        regions[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    sizes = np.bincount(regions.reshape(-1), minlength=n_regions + 1)
    pro_w = np.zeros(masks.shape, dtype=np.float64)
    if n_regions:
        pro_w[masks] = 1.0 / (sizes[regions[masks]] * n_regions)
    n_normal = int((~masks).sum())
    fpr_w = np.where(masks, 0.0, 1.0 / max(n_normal, 1))
    return fpr_w, pro_w, n_regions


def pro_curve(masks, maps, num_thresholds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, pro) points of the per-region-overlap curve, FPR ascending, starting at (0, 0).

    `num_thresholds=None` is exact: every distinct map value is a threshold (one sort of all
    pixels). An int uses that many evenly spaced thresholds over [min, max] of the maps instead,
    which is cheaper for huge inputs and an under-estimate of the exact curve's area.
    """
    masks, maps = _masks_maps(masks, maps)
    fpr_w, pro_w, _ = _pixel_weights(masks)
    values = maps.reshape(-1)
    if num_thresholds is None:
        thresholds, bins = np.unique(values, return_inverse=True)
    else:
        if num_thresholds < 2:
            raise ValueError("num_thresholds must be at least 2")
        thresholds = np.linspace(values.min(), values.max(), int(num_thresholds))
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
    add no area.
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
    bool_masks, _ = _masks_maps(masks, maps)
    if not _both_classes(bool_masks):
        return NAN
    fpr, pro = pro_curve(masks, maps, num_thresholds)
    return _area_up_to(fpr, pro, fpr_limit) / fpr_limit
