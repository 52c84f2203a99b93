"""The AUROC callback: scores the test split every N epochs into the logs and TensorBoard."""

import glob

import numpy as np
import tensorflow as tf

from mhp_keras.data import load_data
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.models import build_conad
from mhp_keras.scoring.auroc_callback import AUROCCallback


def test_callback_logs_auroc_and_images(tiny_config, tmp_path):
    config = tiny_config(**{"eval.every_epochs": 2, "train.epochs": 4})
    data = load_data(config)
    data.test = data.test.subset(np.arange(0, len(data.test), 10))  # keep it quick
    model = build_conad(config)
    model.compile()
    callback = AUROCCallback(data, config, str(tmp_path))
    history = model.fit(
        dataset_for_split(data.train, config, training=True),
        epochs=4,
        verbose=0,
        callbacks=[callback],
    )
    aurocs = history.history["eval_image_auroc"]
    assert len(aurocs) == 2  # epochs 2 and 4 only
    assert all(0.0 <= a <= 1.0 for a in aurocs)
    events = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert events
    tags = set()
    for event in tf.compat.v1.train.summary_iterator(events[0]):
        tags |= {value.tag for value in event.summary.value}
    assert {"eval_image_auroc", "input_best_heatmap", "hypotheses"} <= tags


def test_pixel_anchor_matches_the_aggregation():
    from mhp_keras.scoring.reports import pixel_anchor

    assert pixel_anchor(256.0, "sum", 0.1, 256) == 1.0
    assert pixel_anchor(52.0, "topk_sum", 0.1, 256) == 2.0  # ceil(25.6) = 26 pixels
    assert pixel_anchor(3.0, "mean", 0.1, 256) == 3.0
    assert pixel_anchor(float("inf"), "sum", 0.1, 256) is None
