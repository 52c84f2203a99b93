"""The decisions a trained model makes, and how their thresholds are chosen on normal images.

A model carries three calibration values (ConAD weights, saved with it and frozen into its
exports): the image `threshold`, the `pixel_threshold` and the `score_scale`. From a score and a
map they give `is_anomalous` (score >= threshold), `anomaly_mask` (map >= pixel threshold) and
`normalized_score`, a value in [0, 1] that rises with the score and is at least 0.5 exactly when
the image is anomalous, so an operator can read any score against one fixed midpoint.

Both thresholds are quantiles of normal validation data (scores, and the pixels of their maps),
so neither needs an anomalous example.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# The largest float32 below 0.5: normal images stay strictly below the midpoint even when the
# sigmoid of a tiny negative distance rounds to 0.5.
BELOW_HALF = float(np.nextafter(np.float32(0.5), np.float32(0.0)))
# Pixels of the normal maps used for the pixel quantile: enough for a 0.999 quantile to rest on
# thousands of pixels, few enough to stay small for large native-resolution maps.
PIXEL_SAMPLE = 4_000_000


def decisions(scores, maps, threshold, pixel_threshold, score_scale) -> dict:
    """is_anomalous [B], normalized_score [B] and anomaly_mask [B, h, w] (tensors).

    normalized_score = sigmoid((score - threshold) / score_scale), moved to exactly 0.5 at the
    threshold and kept on its side of 0.5 on either side of it: monotone in the score.
    """
    scores = tf.cast(scores, tf.float32)
    threshold = tf.cast(threshold, tf.float32)
    flagged = scores >= threshold
    raw = tf.sigmoid((scores - threshold) / tf.cast(score_scale, tf.float32))
    normalized = tf.where(flagged, tf.maximum(raw, 0.5), tf.minimum(raw, BELOW_HALF))
    mask = tf.cast(maps, tf.float32) >= tf.cast(pixel_threshold, tf.float32)
    return {"is_anomalous": flagged, "normalized_score": normalized, "anomaly_mask": mask}


def pixel_sample(maps, limit: int = PIXEL_SAMPLE, seed: int = 0) -> np.ndarray:
    """Up to `limit` pixels drawn evenly from a list or array of maps, float64 [n]; pixels
    outside the region of interest (NaN) are left out."""
    parts = [np.asarray(m, dtype=np.float64).reshape(-1) for m in maps]
    parts = [p[~np.isnan(p)] for p in parts]
    total = sum(p.size for p in parts)
    if total == 0:
        return np.zeros([0])
    step = max(1, total // limit)
    return np.concatenate([p[(seed % step) :: step] for p in parts])


def calibrate(normal_scores, normal_maps, quantile: float, pixel_quantile: float) -> dict:
    """Thresholds from normal validation data: the `quantile` of the scores, the
    `pixel_quantile` of the maps' pixels, and a score scale (the threshold's distance from the
    median normal score, so the median normal image gets normalized_score sigmoid(-1) = 0.27)."""
    from mhp_keras.scoring.metrics import threshold_from_normal

    scores = np.asarray(normal_scores, dtype=np.float64).reshape(-1)
    threshold = threshold_from_normal(scores, quantile)
    pixels = pixel_sample(normal_maps)
    return {
        "threshold": threshold,
        "pixel_threshold": threshold_from_normal(pixels, pixel_quantile),
        "score_scale": score_scale(threshold, scores),
    }


def score_scale(threshold: float, normal_scores) -> float:
    """The threshold's distance above the median normal score (a tiny positive floor), which
    normalized_score divides by."""
    spread = threshold - float(np.median(np.asarray(normal_scores, dtype=np.float64)))
    return max(spread, 1e-6 * max(1.0, abs(threshold)))
