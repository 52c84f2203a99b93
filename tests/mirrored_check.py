"""Run in a subprocess by test_distribute.py: trains the same model from the same weights on the
same data, once on one device and once under MirroredStrategy on two logical CPUs, and prints the
largest differences in losses and weights as JSON.

Logical devices must be configured before TensorFlow initialises, hence the separate process.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
from model_helpers import tiny_conad  # noqa: E402


def build(strategy, weights, adv_weight, clip_norm):
    with strategy.scope():
        model = tiny_conad(
            compile=False,
            hypotheses=3,
            adv_weight=adv_weight,
            clip_norm=clip_norm,
            minibatch_std=False,
            seed=3,
        )
        # SGD, not Adam: its update is the gradient itself, so a gradient summed or averaged
        # wrongly over the replicas shows in the weights (Adam's update would hide a factor of
        # two), and the float rounding of two summation orders stays rounding (Adam divides
        # near-zero gradients by their own size and turns rounding into whole steps).
        model.compile(
            g_optimizer=keras.optimizers.SGD(1e-3), d_optimizer=keras.optimizers.SGD(1e-3)
        )
    if weights is not None:
        for variable, value in zip(model.trainable_variables, weights):
            variable.assign(value)
    return model


def train(model, images, steps, batch):
    ds = tf.data.Dataset.from_tensor_slices(images).batch(batch).take(steps)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    return history.history


def main():
    adv_weight, clip_norm = float(sys.argv[1]), float(sys.argv[2])
    keras.utils.set_random_seed(0)
    images = np.random.default_rng(0).random((32, 16, 16, 1)).astype("float32")
    single = build(tf.distribute.get_strategy(), None, adv_weight, clip_norm)
    initial = [v.numpy() for v in single.trainable_variables]
    mirrored = build(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), initial, adv_weight, clip_norm
    )
    a = train(single, images, steps=4, batch=8)
    b = train(mirrored, images, steps=4, batch=8)
    after_single = [v.numpy() for v in single.trainable_variables]
    after_mirrored = [v.numpy() for v in mirrored.trainable_variables]
    weight_diff = max(float(np.max(np.abs(x - y))) for x, y in zip(after_single, after_mirrored))
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(initial, after_single))
    loss_diff = {k: abs(a[k][-1] - b[k][-1]) for k in ("loss", "recon", "kl", "d_loss")}
    print(
        json.dumps(
            {
                "replicas": mirrored.distribute_strategy.num_replicas_in_sync,
                "weight_diff": weight_diff,
                "weights_moved": moved,
                "loss_diff": loss_diff,
                "loss": a["loss"][-1],
            }
        )
    )


if __name__ == "__main__":
    main()
