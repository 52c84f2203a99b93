"""Scores a split with a trained model and turns the scores into metrics, `scores.csv` and a report.

Shared by the end of training, `--mode=evaluate` and the benchmark-over-classes mode, so every
result in this project is computed the same way: every score comes from the model's one scorer
(`mhp_keras.scoring.scorer`), which also gives `ConAD.score` and the SavedModel their values.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np
import tensorflow as tf
from absl import logging

from mhp_keras.data.letterbox import fitted_size
from mhp_keras.data.pipeline import dataset_for_split, resize_image, resize_mask
from mhp_keras.io_utils import write_text_atomic
from mhp_keras.scoring import defect_sizes
from mhp_keras.scoring import metrics as metric_fns
from mhp_keras.scoring.scorer import choose_thresholds, own_maps, stack_or_list


def scoring_batches(model, images, config, batch_size=None) -> tf.data.Dataset:
    """The split's elements as the model's scorer takes them: for a tiling model one image per
    batch at its own size; else batches of images fitted into image_size by the model's
    `resize` (letterbox or squash), their masks placed the same way, and `size`, each image's
    part of the square (what `Scorer.run` takes as `sizes`)."""
    ds = dataset_for_split(images, config, training=False, native=True)
    if model.tiling == "tile":
        return ds.map(lambda row: row | {"size": tf.shape(row["image"])[1:3][None]})
    size, mode = model.image_size, model.resize

    def fit(row):
        return row | {
            "image": resize_image(row["image"], size, mode),
            "mask": resize_mask(row["mask"], size, mode),
            "size": fitted_size(tf.shape(row["image"])[:2], size, mode),
        }

    batch = batch_size or config.data.batch_size
    return ds.unbatch().map(fit, num_parallel_calls=tf.data.AUTOTUNE).batch(batch)


def run(model, batch) -> dict:
    """The scorer's numpy outputs for one batch of `scoring_batches`."""
    sizes = None if model.tiling == "tile" else batch["size"]
    return model.scorer.run(batch["image"], sizes)


def collect(model, images, config) -> dict:
    """Scores, maps, labels, masks, ids and winners (numpy) for one ImageSet, in file order.

    Scored by the model's scorer (`mhp_keras.scoring.scorer`): a tiling model scores every
    image at its own size, and its maps and masks are then one array if all images share a
    size, else lists of per-image arrays; letterboxed maps and masks are cut to each image's
    part of the square. Maps are NaN outside the region of interest. The winners are the
    per-image winning heads.
    """
    parts = {"scores": [], "maps": [], "labels": [], "masks": [], "ids": [], "winners": []}
    for batch in scoring_batches(model, images, config):
        out = run(model, batch)
        parts["scores"].append(out["anomaly_score"])
        parts["maps"].extend(own_maps(out))
        parts["winners"].append(out["winner_index"])
        parts["labels"].append(batch["label"].numpy())
        parts["ids"].append(batch["id"].numpy())
        if images.has_masks:
            masks = {"anomaly_map": batch["mask"].numpy()[..., 0], "map_size": out["map_size"]}
            parts["masks"].extend(own_maps(masks))
    result = {
        key: (stack_or_list(value) if key in ("maps", "masks") else np.concatenate(value))
        if value
        else None
        for key, value in parts.items()
    }
    result["ids"] = [i.decode() if isinstance(i, bytes) else str(i) for i in result["ids"]]
    return result


def calibrate(model, val_images, config) -> tuple[dict, str]:
    """The model's decision values from the validation split, by the one threshold rule
    (`mhp_keras.scoring.scorer.choose_thresholds`): the image threshold (F1-optimal when the
    validation images include anomalies, else the `eval.threshold_quantile` of the normal
    scores), the pixel threshold (the `eval.pixel_threshold_quantile` of the normal images' map
    pixels) and the score scale. Returns them with a sentence saying where the image threshold
    came from."""
    if val_images is None or len(val_images) == 0:
        values = {"threshold": np.inf, "pixel_threshold": np.inf, "score_scale": 1.0}
        return values, "none (no validation images: set data.val_fraction > 0)"
    result = collect(model, val_images, config)
    if not np.any(np.asarray(result["labels"]) == 0):
        raise ValueError("the validation split has no normal image to calibrate on")
    return choose_thresholds(
        result["scores"],
        result["maps"],
        result["labels"],
        config.eval.threshold_quantile,
        config.eval.pixel_threshold_quantile,
    )


def winner_histogram(winners: np.ndarray, hypotheses: int) -> list[float]:
    """Fraction of test images won by each head (for pixel-wise WTA, by the head that wins the
    most of an image's pixels: the SavedModel's winner_index)."""
    counts = np.bincount(np.asarray(winners).reshape(-1), minlength=hypotheses)
    return (counts / max(counts.sum(), 1)).tolist()


# Why image AUROC, AP and F1 are null in metrics.json for a test split of normal images only.
NO_ANOMALIES = (
    "undefined: the test split has no anomalous images "
    "(with data.normal_dir, add data.abnormal_dir)"
)


def compute_metrics(result: dict, threshold: float, hypotheses: int) -> dict:
    """The metrics of a scored test split at `threshold` (pixel metrics too when it has masks).

    `normal_scores` is the score distribution of the normal test images and the fraction of them
    flagged at the threshold. Without anomalous test images (a folder of good images only) that is
    all that can be measured: AUROC, AP and F1 are NaN (null in metrics.json), `image_auroc_note`
    says why and a warning says so in the log.
    """
    labels, scores = np.asarray(result["labels"]), np.asarray(result["scores"])
    out = metric_fns.image_metrics(labels, scores)
    out["threshold"] = float(threshold)
    out["at_threshold"] = metric_fns.classification_at_threshold(labels, scores, threshold)
    out["n_test"] = int(len(labels))
    out["n_anomalous"] = int(labels.sum())
    out["normal_scores"] = metric_fns.score_distribution(scores[labels == 0], threshold)
    out["winner_histogram"] = winner_histogram(result["winners"], hypotheses)
    if result["masks"] is not None:
        out["pixel_auroc"] = metric_fns.pixel_auroc(result["masks"], result["maps"])
        out["aupro"] = metric_fns.aupro(result["masks"], result["maps"])
    if out["n_anomalous"] == 0:
        normal = out["normal_scores"]
        out["image_auroc_note"] = NO_ANOMALIES
        logging.warning(
            "Image AUROC, AP and F1 need anomalous test images and the test split has none (with "
            "data.normal_dir, add data.abnormal_dir). The %d normal test images score median "
            "%.4g, p99 %.4g, max %.4g; %.1f%% of them are flagged at the threshold %.4g.",
            normal["n"],
            normal["median"],
            normal["p99"],
            normal["max"],
            100.0 * normal["flagged_fraction"],
            threshold,
        )
    return out


def scores_csv(result: dict, threshold: float, normalized) -> str:
    """One row per image: id, label, score, predicted (score >= threshold) and the
    normalized_score (>= 0.5 exactly when predicted)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label", "score", "predicted", "normalized_score"])
    rows = zip(result["ids"], result["labels"], result["scores"], normalized)
    for i, label, score, norm in rows:
        writer.writerow(
            [i, int(label), f"{float(score):.6g}", int(score >= threshold), f"{norm:.6g}"]
        )
    return buffer.getvalue()


def write_report(
    model, images, config, result: dict, threshold: float, report_dir: str, training=None
) -> list:
    """ROC, score histograms and an example grid of the most and least anomalous test images,
    with every head, how far each image's heads differ, and (from `training`, the run's
    metrics.json part) its mechanism diagnostics and kept epoch."""
    from mhp_keras.scoring import reports
    from mhp_keras.training.diagnostics import per_image_head_diversity

    # Only the examples shown are decoded again, so a large test set is never held in memory.
    chosen = reports.select_examples(result["scores"], 8)
    rows = list(scoring_batches(model, images.subset(chosen), config, batch_size=1))
    outs = [run(model, row) for row in rows]
    whole = model.tiling != "tile"

    def own(row, key):  # one example's input or mask, cut to its own part of the square
        h, w = (int(v) for v in row["size"][0])
        return row[key].numpy()[0, :h, :w]

    examples = {
        "images": [own(row, "image") for row in rows],
        "best": [own_maps(out, "best_hypothesis")[0] for out in outs],
        "hypotheses": [
            out["hypotheses"][0][:, :h, :w] for out, (h, w) in zip(outs, _sizes(outs), strict=True)
        ]
        if whole
        else None,
        "maps": [own_maps(out)[0] for out in outs],
        "scores": np.asarray([float(out["anomaly_score"][0]) for out in outs]),
        "labels": np.asarray([int(row["label"][0]) for row in rows]),
        "ids": [result["ids"][i] for i in chosen],
        "masks": [own(row, "mask")[..., 0] for row in rows] if images.has_masks else None,
    }
    if whole:
        examples["diversity"] = [
            float(per_image_head_diversity(image[None], heads[None], best[None])[0])
            for image, heads, best in zip(
                examples["images"], examples["hypotheses"], examples["best"], strict=True
            )
        ]
    training = training or {}
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
        run_line=reports.run_summary_line(training.get("mechanism"), training.get("weights")),
    )


def _sizes(outs) -> list[tuple[int, int]]:
    return [tuple(int(v) for v in out["map_size"][0]) for out in outs]


def evaluate(
    model, data, config, workdir: str, threshold: float | None = None, training=None
) -> dict:
    """Scores the test split, writes `scores.csv` and the report, returns the metrics.
    `training` (the run's mechanism diagnostics and kept epoch, as in metrics.json) goes into the
    report's example figure."""
    if threshold is None or not np.isfinite(threshold):
        values, source = calibrate(model, data.val, config)
    else:
        values = {
            "threshold": threshold,
            "pixel_threshold": float(model.pixel_threshold.numpy()),
            "score_scale": float(model.score_scale.numpy()),
        }
        source = "stored in the model"
    threshold = values["threshold"]
    result = collect(model, data.test, config)
    out = compute_metrics(result, threshold, model.hypotheses)
    out["threshold_source"] = source
    out["score_scale"] = values["score_scale"]
    if result["masks"] is not None:
        out.update(
            metric_fns.pixel_decisions(result["masks"], result["maps"], values["pixel_threshold"])
        )
        out["by_defect_size"] = defect_sizes.by_defect_size(
            result["labels"],
            result["scores"],
            result["masks"],
            result["maps"],
            values["pixel_threshold"],
        )
    else:
        out["pixel_threshold"] = values["pixel_threshold"]
    decision_values = (threshold, values["pixel_threshold"], values["score_scale"])
    normalized = model.scorer.decisions(result["scores"], np.zeros([0]), decision_values)
    normalized = normalized["normalized_score"].numpy()
    write_text_atomic(
        os.path.join(workdir, "scores.csv"), scores_csv(result, threshold, normalized)
    )
    if config.eval.report:
        out["report"] = write_report(
            model,
            data.test,
            config,
            result,
            threshold,
            os.path.join(workdir, "report"),
            training,
        )
    return out


def images_only(ds: tf.data.Dataset) -> tf.data.Dataset:
    return ds.map(lambda row: row["image"])
