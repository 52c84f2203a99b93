"""Scores a split with a trained model and turns the scores into metrics, `scores.csv` and a report.

Shared by the end of training, `--mode=evaluate` and the benchmark-over-classes mode, so every
result in this project is computed the same way.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import tensorflow as tf

from mhp_keras import metrics as metric_fns
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.io_utils import write_text_atomic


def collect(model, images, config) -> dict:
    """Scores, maps, labels, masks, ids and winners (numpy) for one ImageSet, in file order."""
    ds = dataset_for_split(images, config, training=False)
    parts = {"scores": [], "maps": [], "labels": [], "masks": [], "ids": [], "winners": []}
    for batch in ds:
        out = model.analyze(batch["image"])
        parts["scores"].append(out["anomaly_score"].numpy())
        parts["maps"].append(out["anomaly_map"].numpy())
        parts["winners"].append(out["winner_index"].numpy())
        parts["labels"].append(batch["label"].numpy())
        parts["ids"].append(batch["id"].numpy())
        if images.has_masks:
            parts["masks"].append(batch["mask"].numpy()[..., 0])
    result = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    result["ids"] = [i.decode() if isinstance(i, bytes) else str(i) for i in result["ids"]]
    return result


def choose_threshold(model, val_images, config) -> tuple[float, str]:
    """The decision threshold: F1-optimal when the validation images include anomalies, else a
    quantile of the normal validation scores."""
    quantile = config.eval.threshold_quantile
    if val_images is None or len(val_images) == 0:
        return float("inf"), "none (no validation images: set data.val_fraction > 0)"
    result = collect(model, val_images, config)
    if len(np.unique(result["labels"])) == 2:  # labelled validation data: use it
        threshold = metric_fns.f1_optimal_threshold(result["labels"], result["scores"])
        return threshold, "F1-optimal on labelled validation images"
    normal = result["scores"][result["labels"] == 0]
    return metric_fns.threshold_from_normal(normal, quantile), f"validation quantile {quantile}"


def winner_histogram(winners: np.ndarray, hypotheses: int) -> list[float]:
    """Fraction of test images (or pixels) won by each head."""
    counts = np.bincount(np.asarray(winners).reshape(-1), minlength=hypotheses)
    return (counts / max(counts.sum(), 1)).tolist()


def compute_metrics(result: dict, threshold: float, hypotheses: int) -> dict:
    labels, scores = result["labels"], result["scores"]
    out = metric_fns.image_metrics(labels, scores)
    out["threshold"] = float(threshold)
    out["at_threshold"] = metric_fns.classification_at_threshold(labels, scores, threshold)
    out["n_test"] = int(len(labels))
    out["n_anomalous"] = int(labels.sum())
    out["winner_histogram"] = winner_histogram(result["winners"], hypotheses)
    if result["masks"] is not None:
        out["pixel_auroc"] = metric_fns.pixel_auroc(result["masks"], result["maps"])
        out["aupro"] = metric_fns.aupro(result["masks"], result["maps"])
    return out


def scores_csv(result: dict, threshold: float) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label", "score", "predicted"])
    for i, label, score in zip(result["ids"], result["labels"], result["scores"]):
        writer.writerow([i, int(label), f"{float(score):.6g}", int(score >= threshold)])
    return buffer.getvalue()


def write_report(model, images, config, result: dict, threshold: float, report_dir: str) -> list:
    """ROC, score histograms and an example grid of the most and least anomalous test images."""
    from mhp_keras import reports

    # Only the examples shown are decoded again, so a large test set is never held in memory.
    chosen = reports.select_examples(result["scores"], 8)
    picked = images.subset(chosen)
    batch = next(
        iter(dataset_for_split(picked, config, training=False).unbatch().batch(len(chosen)))
    )
    out = model.analyze(batch["image"])
    examples = {
        "images": batch["image"].numpy(),
        "best": out["best_hypothesis"].numpy(),
        "hypotheses": out["hypotheses"].numpy(),
        "maps": out["anomaly_map"].numpy(),
        "scores": out["anomaly_score"].numpy(),
        "labels": batch["label"].numpy(),
        "ids": [result["ids"][i] for i in chosen],
        "masks": batch["mask"].numpy()[..., 0] if images.has_masks else None,
    }
    return reports.write_report(
        report_dir,
        labels=result["labels"],
        scores=result["scores"],
        threshold=threshold,
        examples=examples,
        norm=reports.heatmap_scale(
            result["maps"],
            result["labels"],
            threshold=threshold,
            aggregate=model.score_aggregate,
            topk_fraction=model.topk_fraction,
        ),
    )


def evaluate(model, data, config, workdir: str, threshold: float | None = None) -> dict:
    """Scores the test split, writes `scores.csv` and the report, returns the metrics."""
    if threshold is None or not np.isfinite(threshold):
        threshold, source = choose_threshold(model, data.val, config)
    else:
        source = "stored in the model"
    result = collect(model, data.test, config)
    out = compute_metrics(result, threshold, model.hypotheses)
    out["threshold_source"] = source
    write_text_atomic(os.path.join(workdir, "scores.csv"), scores_csv(result, threshold))
    if config.eval.report:
        out["report"] = write_report(
            model, data.test, config, result, threshold, os.path.join(workdir, "report")
        )
    return out


def images_only(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda row: row["image"])
