"""The one scorer of a trained `ConAD`: every score, map, decision and threshold comes from here.

`ConAD.score`, `analyze`, `analyze_tiled`, `fit_threshold` and `decide`, the evaluation
(`mhp_keras.scoring.evaluation`: collect, calibrate, report), the AUROC callback and both
SavedModel signatures (`mhp_keras.serving.export`, hence `mhp-predict`) call it, so the
tiled-or-whole branch (`Scorer.outputs`) and the threshold rule (`choose_thresholds`) exist once.

Scoring (Nguyen et al. 2019, Section 3.3): z is the posterior mean, the per-pixel anomaly map is
the Gaussian NLL under the winning head, and the image score aggregates it (`score.aggregate`).
A model with `tiling="tile"` scores every image at its own size on image_size tiles
(`mhp_keras.scoring.tiling`); otherwise each image is fitted into image_size x image_size
(`resize`: letterboxed or squashed, `mhp_keras.data.letterbox`), and its map is its own part of
the square. Pixels outside the region of interest (`roi`, `mhp_keras.scoring.regions`; the
letterbox padding too) count in no score, and the maps are NaN there, so the pixel threshold
and the pixel metrics leave them out as well.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mhp_keras.config.defaults import base_config
from mhp_keras.data.letterbox import content_box, fitted_size
from mhp_keras.data.pipeline import resize_image
from mhp_keras.errors import DataError
from mhp_keras.scoring import calibration, regions, tiling
from mhp_keras.training import losses, mixture

# What the one threshold rule says about where the image threshold came from.
QUANTILE_SOURCE = "validation quantile {quantile}"
F1_SOURCE = "F1-optimal on labelled validation images"


def choose_thresholds(scores, maps, labels=None, quantile=None, pixel_quantile=None):
    """The one threshold rule: (calibration values, where the image threshold came from).

    The image threshold is F1-optimal when `labels` (0 normal, 1 anomalous) include both
    classes, else the `quantile` of the normal images' scores (default: the config's
    `eval.threshold_quantile`); the pixel threshold is the `pixel_quantile` (default
    `eval.pixel_threshold_quantile`) of the normal images' map pixels; the score scale is the
    threshold's distance from the median normal score (see `mhp_keras.scoring.calibration`).
    """
    from mhp_keras.scoring.metrics import f1_optimal_threshold

    defaults = base_config().eval
    quantile = defaults.threshold_quantile if quantile is None else quantile
    if pixel_quantile is None:
        pixel_quantile = defaults.pixel_threshold_quantile
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.zeros(len(scores), int) if labels is None else np.asarray(labels).reshape(-1)
    if len(labels) != len(scores):
        raise ValueError(f"got {len(labels)} labels for {len(scores)} images.")
    normal = np.flatnonzero(labels == 0)
    if normal.size == 0:
        raise ValueError("calibration needs at least one normal image (label 0).")
    values = calibration.calibrate(
        scores[normal], [maps[i] for i in normal], quantile, pixel_quantile
    )
    if len(np.unique(labels)) == 2:  # labelled anomalies: use them
        values["threshold"] = f1_optimal_threshold(labels, scores)
        values["score_scale"] = calibration.score_scale(values["threshold"], scores[normal])
        return values, F1_SOURCE
    return values, QUANTILE_SOURCE.format(quantile=quantile)


def own_maps(out: dict, key: str = "anomaly_map") -> list[np.ndarray]:
    """The per-image arrays of a numpy `Scorer.run` result, each cut to its own map size."""
    return [value[:h, :w] for value, (h, w) in zip(out[key], out["map_size"], strict=True)]


def stack_or_list(arrays: list[np.ndarray]):
    """One array when every element has the same shape, else the list (native sizes differ)."""
    return np.stack(arrays) if len({a.shape for a in arrays}) == 1 else arrays


class Scorer:
    """Scores, maps, decisions and thresholds of one `ConAD` (`model.scorer`)."""

    def __init__(self, model):
        self.model = model
        # One traced function for eager callers; the graph callers (the SavedModel) trace
        # `outputs` into their own signatures.
        self._outputs = tf.function(self.outputs, reduce_retracing=True)
        self._mask = regions.decode_mask(getattr(model, "roi_mask", ""))

    def region(self, image) -> tf.Tensor | None:
        """bool [h, w]: the region of interest of one image [h, w, C] (None: every pixel)."""
        model = self.model
        return regions.region_of(image, model.roi, self._mask, model.roi_margin)

    # -- in the graph --------------------------------------------------------------------------

    def analyze(self, images) -> dict:
        """Everything scoring needs for a [B, h, w, C] float batch in [0, 1] (`ConAD.analyze`)."""
        model = self.model
        images = tf.cast(images, tf.float32)
        if model.mixture == "mdn":
            terms = mixture.scoring_terms(model, images)
        else:
            means, log_vars = model(images, training=False)
            nll = losses.gaussian_nll(images, means, log_vars)
            terms = {
                "means": means,
                "raw_map": losses.anomaly_map(nll, model.wta),
                "winner_index": losses.winner_index(nll, model.wta),
                "best_hypothesis": losses.best_hypothesis(means, nll, model.wta),
            }
        amap = terms["raw_map"]
        score = losses.aggregate_map(amap, model.score_aggregate, model.topk_fraction)
        if "remainder" in terms and model.score_aggregate == "sum":
            score += terms["remainder"]  # the summed MDN score is the mixture NLL itself
        return {
            "anomaly_score": score,
            "anomaly_map": losses.smooth_map(amap, model.blur),
            "raw_map": amap,
            "winner_index": terms["winner_index"],
            "best_hypothesis": tf.cast(terms["best_hypothesis"], tf.float32),
            "hypotheses": tf.cast(terms["means"], tf.float32),
        }

    def _tile_outputs(self, tiles):
        """What tiled inference stitches from a batch of tiles, plus each tile's head votes."""
        out = self.model.analyze(tiles)
        votes = tf.one_hot(out["winner_index"], self.model.hypotheses)
        if self.model.wta == "pixel":
            votes = tf.reduce_sum(votes, axis=[1, 2])
        return {
            "anomaly_map": out["anomaly_map"],
            "raw_map": out["raw_map"],
            "best_hypothesis": out["best_hypothesis"],
            "votes": votes,
        }

    def analyze_tiled(self, image) -> dict:
        """One float image [H, W, C] of any size scored on tiles (`ConAD.analyze_tiled`)."""
        model = self.model
        image = original = tf.cast(image, tf.float32)
        size = tf.shape(image)[:2]
        # The one scaling that training tiles are cut at, so the model scores at its own scale.
        image = tiling.scale_image(image, model.tile_scale)
        out = tiling.tiled_apply(
            image,
            self._tile_outputs,
            model.image_size,
            model.stride,
            {"anomaly_map": [], "raw_map": [], "best_hypothesis": [model.channels]},
            model.hypotheses,
        )
        amap, best = out["anomaly_map"], out["best_hypothesis"]
        region = self.region(image)  # at the scale the tiles were scored at
        raw, inside = out["raw_map"][None], None if region is None else region[None]
        score = losses.aggregate_map(raw, model.score_aggregate, model.topk_fraction, inside)[0]
        if model.tile_scale != 1.0:  # maps and reconstructions at the image's own size
            amap = tf.image.resize(amap[..., None], size)[..., 0]
            best = tf.clip_by_value(tf.image.resize(best, size), 0.0, 1.0)
            region = None if region is None else self.region(original)
        amap = regions.outside_as_nan(amap, region)
        return {
            "anomaly_score": score,
            "anomaly_map": amap,
            "best_hypothesis": best,
            "winner_index": tf.argmax(out["votes"], output_type=tf.int32),
        }

    def outputs(self, images, sizes=None) -> dict:
        """The outputs of a batch of float images in [0, 1], tiled or whole as the model says.

        `images` is a [B, h, w, C] tensor or also a `tf.TensorArray` of [h, w, C] images whose
        sizes may differ; `sizes` [B, 2], for whole images already fitted into image_size (the
        evaluation's batches), says where each one lies in its square. Returns anomaly_score
        [B], anomaly_map [B, H, W] (NaN outside the region of interest), best_hypothesis
        [B, H, W, C], winner_index [B] (for pixel-wise WTA the head that wins the most pixels,
        ties to the lowest index; tiled, the most tiles) and map_size [B, 2], each image's own
        map size. Whole images are fitted into image_size, so H x W is image_size squared and
        map_size the image's part of it (all of it when squashed), and also give hypotheses
        [B, K, S, S, C]; tiled, H x W is the batch's largest image. Smaller maps are zero-padded
        at the bottom and right.
        """
        if self.model.tiling == "tile":
            if not isinstance(images, tf.TensorArray):
                count = tf.shape(images)[0]
                images = tf.TensorArray(tf.float32, size=count, infer_shape=False).unstack(
                    tf.cast(images, tf.float32)
                )
            return self._tiled(images)
        if isinstance(images, tf.TensorArray):
            images, sizes = self._fit_each(images)
        elif sizes is None:
            images, sizes = self.fit(images)
        return self._whole(images, sizes)

    def fit(self, images) -> tuple[tf.Tensor, tf.Tensor]:
        """A [B, h, w, C] batch fitted into image_size as the data pipeline does, and each
        image's part of the square, [B, 2]."""
        size, mode = self.model.image_size, self.model.resize
        images = tf.cast(images, tf.float32)
        count = tf.shape(images)[0]
        if images.shape[1:3].as_list() == [size, size]:
            return images, tf.fill([count, 2], size)
        fitted = fitted_size(tf.shape(images)[1:3], size, mode)
        return resize_image(images, size, mode), tf.tile(fitted[None], [count, 1])

    def _fit_each(self, images: tf.TensorArray) -> tuple[tf.Tensor, tf.Tensor]:
        """Images of different sizes, each fitted into image_size (the bytes signature)."""
        size, channels = self.model.image_size, self.model.channels

        def one(i):
            image = tf.ensure_shape(images.read(i), [None, None, channels])
            fitted, sizes = self.fit(image[None])
            return fitted[0], sizes[0]

        specs = (tf.TensorSpec([size, size, channels], tf.float32), tf.TensorSpec([2], tf.int32))
        return tf.map_fn(one, tf.range(images.size()), fn_output_signature=specs)

    def _regions(self, images, sizes):
        """bool [B, S, S]: each image's region of interest inside its part of the square (None
        when every pixel of every square counts: no region and squashed images)."""
        size, model = self.model.image_size, self.model
        if model.roi == "none" and model.resize == "squash":
            return None
        box = content_box(sizes, size)
        if model.roi == "none":
            return box

        def one(args):
            image, h, w = args[0], args[1][0], args[1][1]
            region = self.region(image[:h, :w])
            return tf.pad(region, [[0, size - h], [0, size - w]])

        spec = tf.TensorSpec([size, size], tf.bool)
        inside = tf.map_fn(one, (images, tf.cast(sizes, tf.int32)), fn_output_signature=spec)
        return tf.logical_and(box, inside)

    def _whole(self, images, sizes) -> dict:
        model = self.model
        out = dict(model.analyze(images))
        region = self._regions(images, sizes)
        if region is not None:
            score = losses.aggregate_map(
                out["raw_map"], model.score_aggregate, model.topk_fraction, region
            )
            if model.roi == "none":  # square images fill their square: the same score as ever
                full = tf.reduce_all(tf.equal(sizes, model.image_size))
                score = tf.cond(full, lambda: out["anomaly_score"], lambda: score)
            out["anomaly_score"] = score
            box = content_box(sizes, model.image_size)
            amap = regions.outside_as_nan(out["anomaly_map"], tf.logical_or(region, ~box))
            out["anomaly_map"] = tf.where(box, amap, tf.zeros_like(amap))
        if model.wta == "pixel":
            one_hot = tf.one_hot(out["winner_index"], model.hypotheses, dtype=tf.int32)
            counts = tf.reduce_sum(one_hot, axis=[1, 2])
            out["winner_index"] = tf.argmax(counts, axis=1, output_type=tf.int32)
        out["map_size"] = tf.cast(sizes, tf.int32)
        return out

    def _tiled(self, images: tf.TensorArray) -> dict:
        count = images.size()
        shapes = tf.TensorArray(tf.int32, size=count)
        _, shapes = tf.while_loop(
            lambda i, _: i < count,
            lambda i, shapes: (i + 1, shapes.write(i, tf.shape(images.read(i))[:2])),
            (tf.constant(0), shapes),
        )
        map_size = shapes.stack()
        height, width = tf.reduce_max(map_size[:, 0]), tf.reduce_max(map_size[:, 1])
        keys = ("anomaly_score", "winner_index", "anomaly_map", "best_hypothesis")
        dtypes = (tf.float32, tf.int32, tf.float32, tf.float32)

        def score_one(i, arrays):
            out = self.model.analyze_tiled(images.read(i))
            out["anomaly_map"] = _pad_to(out["anomaly_map"], height, width)
            out["best_hypothesis"] = _pad_to(out["best_hypothesis"], height, width)
            return i + 1, tuple(a.write(i, out[k]) for a, k in zip(arrays, keys, strict=True))

        arrays = tuple(tf.TensorArray(dtype, size=count) for dtype in dtypes)
        _, arrays = tf.while_loop(lambda i, _: i < count, score_one, (tf.constant(0), arrays))
        out = {key: array.stack() for key, array in zip(keys, arrays, strict=True)}
        out["map_size"] = map_size
        return out

    def decisions(self, scores, maps, values=None) -> dict:
        """is_anomalous, normalized_score and anomaly_mask (tensors) at the model's stored
        calibration values, or at `values` (threshold, pixel threshold, score scale)."""
        model = self.model
        if values is None:
            values = (model.threshold, model.pixel_threshold, model.score_scale)
        return calibration.decisions(scores, maps, *values)

    # -- numpy ---------------------------------------------------------------------------------

    def run(self, images, sizes=None) -> dict:
        """`outputs` of one float batch [B, h, w, C] (numpy or a tensor), as numpy; `sizes` as
        in `outputs`."""
        images = tf.convert_to_tensor(images, tf.float32)
        out = self._outputs(images) if sizes is None else self._outputs(images, sizes)
        return {key: value.numpy() for key, value in out.items()}

    def score(self, images, batch_size: int = 64):
        """Scores [N] and maps of float images in [0, 1] (`ConAD.score`); whole images' maps are
        at image_size, at the images' own aspect when letterboxed."""
        model = self.model
        if model.tiling == "tile":
            scores, maps = [], []
            for index, image in enumerate(images):
                out = self.run(self.check_image(image, index)[None])
                scores.append(out["anomaly_score"][0])
                maps.append(own_maps(out)[0])
            return np.asarray(scores, np.float32), (stack_or_list(maps) if maps else maps)
        images = self.check_images(images)
        scores, maps = [], []
        for start in range(0, len(images), batch_size):
            out = self.run(images[start : start + batch_size])
            scores.append(out["anomaly_score"])
            maps.append(np.stack(own_maps(out)))
        if not scores:
            size = model.image_size
            return np.zeros([0], np.float32), np.zeros([0, size, size], np.float32)
        return np.concatenate(scores), np.concatenate(maps)

    def decide(self, scores, maps) -> dict:
        """The decisions for numpy scores [N] and maps (an array or a list), as numpy."""
        out = self.decisions(np.asarray(scores), np.zeros([0]))
        masks = [self.decisions([0.0], m)["anomaly_mask"].numpy() for m in maps]
        return {
            "is_anomalous": out["is_anomalous"].numpy(),
            "normalized_score": out["normalized_score"].numpy(),
            "anomaly_mask": np.stack(masks) if isinstance(maps, np.ndarray) else masks,
        }

    def fit_threshold(self, images, labels=None, quantile=None, pixel_quantile=None, **kwargs):
        """Scores `images`, applies `choose_thresholds` and stores the values in the model;
        returns (values, source). `kwargs` go to `score` (batch_size)."""
        scores, maps = self.score(images, **kwargs)
        if len(scores) == 0:
            raise ValueError("fit_threshold needs at least one normal image.")
        values, source = choose_thresholds(scores, maps, labels, quantile, pixel_quantile)
        self.model.set_calibration(**values)
        return values, source

    def check_image(self, image, index: int) -> np.ndarray:
        """One image for tiled scoring as float32 [h, w, C]; a DataError names what is wrong."""
        channels = self.model.channels
        image = np.asarray(image)
        if image.ndim == 2 and channels == 1:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != channels or 0 in image.shape:
            raise DataError(
                f"image {index} has shape {image.shape}; expected [height, width, "
                f"{channels}] with float pixels in [0, 1]."
            )
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise DataError(
                f"images at index [{index}] contain NaN or Inf; expected finite pixel values "
                "in [0, 1]."
            )
        return image

    def check_images(self, images) -> np.ndarray:
        """A numpy batch for whole-image scoring, checked (rank, channels, finiteness), as
        float32 [N, h, w, C] (the scorer fits it into image_size)."""
        size, channels = self.model.image_size, self.model.channels
        images = np.asarray(images)
        if images.ndim == 3 and channels == 1:
            images = images[..., None]
        expected = f"[N, {size}, {size}, {channels}]"
        if images.ndim != 4:
            raise DataError(
                f"images have shape {images.shape}; expected a batch shaped {expected}."
            )
        if images.shape[-1] != channels:
            raise DataError(
                f"images have {images.shape[-1]} channels; this model expects {channels} "
                f"(shape {expected})."
            )
        images = images.astype(np.float32)
        bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
        if bad.any():
            raise DataError(
                f"images at index {np.flatnonzero(bad)[:10].tolist()} contain NaN or Inf; "
                "expected finite pixel values in [0, 1]."
            )
        return images


def _pad_to(tensor: tf.Tensor, height, width) -> tf.Tensor:
    """[h, w, ...] padded with zeros at the bottom and right to [height, width, ...]."""
    shape = tf.shape(tensor)
    extra = [[0, 0]] * (len(tensor.shape) - 2)
    return tf.pad(tensor, [[0, height - shape[0]], [0, width - shape[1]]] + extra)
