"""A Keras callback that measures anomaly-detection quality while training.

Every `eval.every_epochs` epochs it scores the test split, logs image (and, with masks, pixel)
AUROC into the epoch logs and TensorBoard, and writes image summaries: inputs, best hypotheses,
every hypothesis and the anomaly heatmap, on one colour scale shared by all images of the step.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mhp_keras.scoring import metrics as metric_fns
from mhp_keras.scoring.evaluation import collect
from mhp_keras.scoring.reports import heatmap_rgb, model_heatmap_scale

N_IMAGES = 4


class AUROCCallback(keras.callbacks.Callback):
    def __init__(self, data, config, log_dir: str):
        super().__init__()
        self.data = data
        self.config = config
        self.every = int(config.eval.every_epochs)
        self.writer = tf.summary.create_file_writer(log_dir)

    def on_epoch_end(self, epoch, logs=None):
        if self.every <= 0 or (epoch + 1) % self.every:
            return
        result = collect(self.model, self.data.test, self.config)
        values = {
            "eval_image_auroc": metric_fns.image_metrics(result["labels"], result["scores"])[
                "image_auroc"
            ]
        }
        if result["masks"] is not None:
            values["eval_pixel_auroc"] = metric_fns.pixel_auroc(result["masks"], result["maps"])
        if logs is not None:
            logs.update(values)
        with self.writer.as_default(step=epoch + 1):
            for name, value in values.items():
                tf.summary.scalar(name, value)
            self._image_summaries(result)
        self.writer.flush()

    def _image_summaries(self, result):
        # The most anomalous test images: the ones worth looking at.
        order = np.argsort(result["scores"])[::-1][:N_IMAGES]
        picked = self.data.test.subset(np.sort(order))
        from mhp_keras.data.pipeline import dataset_for_split

        batch = next(iter(dataset_for_split(picked, self.config, training=False)))
        out = self.model.analyze(batch["image"])
        images = batch["image"].numpy()
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        norm = model_heatmap_scale(self.model, result["maps"], result["labels"])
        heat = heatmap_rgb(out["anomaly_map"].numpy(), norm)
        hyps = out["hypotheses"].numpy()  # [n, K, h, w, C]
        n, k, h, w, c = hyps.shape
        strip = hyps.transpose(0, 2, 1, 3, 4).reshape(n, h, k * w, c)
        if c == 1:
            strip = np.repeat(strip, 3, axis=-1)
        best = out["best_hypothesis"].numpy()
        if best.shape[-1] == 1:
            best = np.repeat(best, 3, axis=-1)
        tf.summary.image(
            "input_best_heatmap", np.concatenate([images, best, heat], axis=2), max_outputs=n
        )
        tf.summary.image("hypotheses", strip, max_outputs=n)
