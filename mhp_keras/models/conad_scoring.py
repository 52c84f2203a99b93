"""The scoring half of `ConAD`'s Keras surface: scores, maps, decisions and calibration.

A mixin so that `mhp_keras.models.conad` stays the model's construction, configuration and
training surface. Every method delegates to the one scorer (`mhp_keras.scoring.scorer`), so
there is nothing to compute here; the calibration values are model weights, saved with the model
and frozen into its exports.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mhp_keras.scoring.scorer import Scorer


class ConADScoring:
    """Scoring methods of `ConAD` (see `mhp_keras.models.conad.ConAD`)."""

    # -- scoring (mhp_keras.scoring.scorer) ----------------------------------------------------

    @property
    def scorer(self) -> Scorer:
        """The model's one scorer: scores, maps, decisions and thresholds."""
        return self._scorer

    @tf.function(reduce_retracing=True)
    def analyze(self, images):
        """Everything scoring needs for a [B, h, w, C] float batch in [0, 1], deterministically
        (z is the posterior mean): anomaly_score [B], anomaly_map [B, h, w] (blurred by `blur`
        pixels), raw_map, winner_index ([B], or [B, h, w] for pixel-wise WTA), best_hypothesis
        [B, h, w, C] and hypotheses [B, K, h, w, C]; see `Scorer.analyze`."""
        return self._scorer.analyze(images)

    @tf.function(reduce_retracing=True)
    def analyze_tiled(self, image):
        """One float image [H, W, C] in [0, 1] of any size, scored on `image_size` tiles `stride`
        apart after scaling by `tile_scale` (`mhp_keras.scoring.tiling`), the maps stitched
        back to the image's size: anomaly_score [], anomaly_map [H, W], best_hypothesis
        [H, W, C] and winner_index [] (the head that won the most tiles)."""
        return self._scorer.analyze_tiled(image)

    @property
    def blur(self) -> float:
        """The anomaly map's Gaussian blur in pixels (`map_sigma`, or image_size / 32)."""
        return self.image_size / 32.0 if self.map_sigma is None else self.map_sigma

    @property
    def stride(self) -> int:
        """Pixels between tile origins in tiled inference (`tile_stride`, or half a tile)."""
        return self.tile_stride or max(1, self.image_size // 2)

    def score(self, images, batch_size=64):
        """Anomaly scores [N] and maps for float images in [0, 1] (numpy; NaN or Inf raise a
        DataError). Without tiling, images are resized to image_size and the maps are
        [N, image_size, image_size]; with `tiling="tile"` `images` may be a list of sizes, each
        scored at its own size, and the maps are one array if all share a size, else a list."""
        return self._scorer.score(images, batch_size=batch_size)

    def decide(self, scores, maps) -> dict:
        """The model's decisions for scores [N] and maps (as `score` returns them), numpy:
        is_anomalous [N], normalized_score [N] in [0, 1] (>= 0.5 exactly when anomalous) and
        anomaly_mask (map >= the pixel threshold), with the stored thresholds."""
        return self._scorer.decide(scores, maps)

    def set_calibration(self, threshold, pixel_threshold, score_scale) -> None:
        """Stores the image threshold, pixel threshold and score scale (see
        `mhp_keras.scoring.calibration`); they are saved with the model and frozen into its
        exports."""
        self.threshold.assign(float(threshold))
        self.pixel_threshold.assign(float(pixel_threshold))
        self.score_scale.assign(float(score_scale))

    def fit_threshold(
        self, normal_images, quantile=None, pixel_quantile=None, batch_size=64, labels=None
    ) -> float:
        """Calibrates the decisions on `normal_images` (float, in [0, 1], not trained on) and
        returns the image threshold, by the one rule evaluation uses
        (`mhp_keras.scoring.scorer.choose_thresholds`): F1-optimal when `labels` (0 normal,
        1 anomalous) include anomalies, else the `quantile` (default `eval.threshold_quantile`)
        of the normal scores; the pixel threshold is the `pixel_quantile` (default
        `eval.pixel_threshold_quantile`) of the normal maps' pixels. Saved with the model and
        frozen into its exports."""
        values, _ = self._scorer.fit_threshold(
            normal_images, labels, quantile, pixel_quantile, batch_size=batch_size
        )
        return values["threshold"]

    def _calibration_weight(self, name: str, value: float):
        return self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(value),
            trainable=False,
            name=name,
        )

    def load_own_variables(self, store):
        """Loads the calibration weights. Models saved before the pixel threshold and the score
        scale existed hold the image threshold alone; the others keep their defaults."""
        own = [self.threshold, self.pixel_threshold, self.score_scale]
        if len(store) > len(own):
            raise ValueError(
                f"ConAD holds {len(own)} calibration values but the saved model has {len(store)}."
            )
        for index in range(len(store)):
            own[index].assign(store[str(index)])
