"""How the benchmark builds a model and times its training steps.

Every training measurement (the hypothesis sweep, the variants, the pipeline) must time the same
thing, the `train_function` that `fit` runs, with the same statistics; this module is that shared
harness: configs, models, in-memory data, `TrainRunner`, round-robin timing and medians.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from mhp_keras.config.defaults import base_config
from mhp_keras.models import build_conad
from mhp_keras.training.experiment import PRECISION_POLICIES, make_optimizers


def model_config(
    hypotheses, image_size, channels, fused=True, mixed="none", jit=False, adversarial=True
):
    """The default config (`config_defaults.base_config`) with this run's sizes.

    Precision and XLA are set explicitly (float32 and no XLA unless asked), so a variant's
    speed-up is against float32 whatever `train.mixed_precision=auto` would pick on this CPU.
    """
    c = base_config()
    c.data.image_size = image_size
    c.data.channels = channels
    c.model.hypotheses = hypotheses
    c.model.fused_heads = fused
    c.train.mixed_precision = mixed
    c.train.jit_compile = "true" if jit else "false"
    if not adversarial:  # MHP-WTA: no discriminator
        c.loss.adv_weight = 0.0
    return c


def build_model(config):
    """Builds and compiles a ConAD as `experiment.build_and_compile` does, on one device.

    The dtype policy is global in Keras, so it is set for the build and restored after: layers
    keep the policy they were built with. Seeds are set once per run, not here: seeding
    clears TF's kernel cache, and every model built so far would re-instantiate its step.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISION_POLICIES[config.train.mixed_precision])
    try:
        model = build_conad(config)
        g_opt, d_opt = make_optimizers(config)
        model.compile(
            g_optimizer=g_opt, d_optimizer=d_opt, jit_compile=config.train.jit_compile == "true"
        )
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def random_images(n, size, channels, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


def memory_dataset(images: np.ndarray, batch: int) -> tf.data.Dataset:
    """Batches of tensors already in memory, shaped like the pipeline's ([None, S, S, C]).

    Nothing to prefetch or tune: with tf.data autotuning on, deleting an iterator can block for
    up to a second while the autotuner thread wakes up, which would only add noise here.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices(images).batch(batch).with_options(options)


class TrainRunner:
    """Runs one `fit`-compiled training step at a time and waits for it to finish."""

    def __init__(self, model, dataset: tf.data.Dataset):
        self.model = model
        model.make_train_function()
        self.function = model.train_function
        self.iterator = iter(dataset.repeat())
        self.logs = None
        self.first_step_s = None

    def step(self, iterator=None):
        self.logs = self.function(iterator if iterator is not None else self.iterator)
        return float(self.logs["loss"])  # blocks until the step is done

    def warm_up(self, steps: int) -> None:
        start = time.perf_counter()
        self.step()
        self.first_step_s = time.perf_counter() - start
        for _ in range(steps - 1):
            self.step()


def time_steps(runner: TrainRunner, steps: int) -> float:
    """Seconds per step over `steps` consecutive steps."""
    start = time.perf_counter()
    for _ in range(steps):
        runner.step()
    return (time.perf_counter() - start) / steps


def round_robin(runners: dict, repeats: int, steps: int) -> dict:
    """Per-round seconds per step of every runner, the runners interleaved round by round."""
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            times[name].append(time_steps(runner, steps))
    return times


def median(values) -> float:
    return float(np.median(values))


def paired_ratio(numerator, denominator) -> float:
    """Median of per-round ratios: robust to load that drifts between rounds."""
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def train_summary(seconds, batch) -> dict:
    """Median step time and throughput; the best round too, the least disturbed by other load."""
    step = median(seconds)
    return {
        "step_ms": 1000 * step,
        "best_step_ms": 1000 * min(seconds),
        "images_per_s": batch / step,
        "rounds_ms": [1000 * s for s in seconds],
    }
