"""Timing training steps for `train.jit_compile=auto` (`mhp_keras.training.jit`): one setting's
steps on the throw-away model, a step at a time, on real training images held in memory.

Kept apart from the rule that decides, so that the rule reads on its own and can be driven by a
fake clock in tests while these functions do the real measuring.
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings

import numpy as np
import tensorflow as tf
from absl import logging

from mhp_keras.data.pipeline import make_dataset

# Untimed steps per setting, the first (tracing, or XLA compiling) one included. The step after
# the first was already at its steady time here; one more absorbs stragglers.
WARMUP_STEPS = 3
# Timed steps per setting, one per round: single steps move a lot under the load of a shared
# 2-core machine, and the median of ten steadies them enough to tell the speed-ups of
# benchmarks/README.md from 1x, for a few seconds of steps.
TIMED_STEPS = 10
# How many distinct real batches the calibration cycles through.
CALIBRATION_BATCHES = 4


def calibration_dataset(images, config) -> tf.data.Dataset:
    """`CALIBRATION_BATCHES` full global batches of real training images, repeated, from memory.

    The images are read in file order without shuffling (shape, not content, sets a step's cost),
    from a pipeline of their own: iterating the training dataset would move its shuffle state.
    Fewer images than the batches need are repeated, so every batch has the training shape.
    """
    batch = config.data.batch_size
    ds = make_dataset(
        images,
        channels=config.data.channels,
        image_size=config.data.image_size,
        batch_size=batch,
        training=False,
        cache=False,
    )
    pixels = tf.concat([row["image"] for row in ds.take(CALIBRATION_BATCHES)], axis=0)
    pixels = tf.gather(pixels, tf.range(CALIBRATION_BATCHES * batch) % tf.shape(pixels)[0])
    options = tf.data.Options()
    # Nothing to tune in memory; the autotuner's thread would only add noise to the timings.
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tf.data.Dataset.from_tensor_slices(pixels).batch(batch).repeat().with_options(options)


class Steps:
    """One setting's `train_function` on the throw-away model, run and timed a step at a time."""

    def __init__(self, model, jit_compile: bool, iterator, clock):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns when it refuses XLA; raised below
            model.jit_compile = jit_compile
        if model.jit_compile != jit_compile:  # Keras turns it off for models it cannot compile
            raise RuntimeError("Keras reports that this model does not support jit_compile")
        model.make_train_function(force=True)
        self.function, self.iterator, self.clock = model.train_function, iterator, clock

    def step(self) -> float:
        start = self.clock()
        logs = self.function(self.iterator)
        for value in tf.nest.flatten(logs):
            np.asarray(value)  # waits for the step to finish
        return self.clock() - start


@contextlib.contextmanager
def preserved_random_state():
    """Building the throw-away model draws initializer seeds from Python's `random`; put the
    state back so that nothing after the calibration draws differently from a forced run."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _error_text(exc: Exception) -> str:
    """An exception in one line, without the Python traceback TF puts inside its messages."""
    lines = [line.strip() for line in str(exc).splitlines() if not line.startswith("  ")]
    return f"{type(exc).__name__}: {' '.join(line for line in lines if line)}"[:1000]


def time_xla(steps: dict, model, iterator, clock):
    """XLA's warm-up, then both settings interleaved: (XLA's first step s, default ms, XLA ms,
    timed rounds, error); XLA's times are infinite and the default's None if XLA failed."""
    try:
        steps[True] = Steps(model, True, iterator, clock)
        xla_first = steps[True].step()
        for _ in range(WARMUP_STEPS - 1):
            steps[True].step()
        times = {False: [], True: []}
        for round_index in range(TIMED_STEPS):
            # Alternating which goes first cancels any effect of the order.
            for jit in (False, True) if round_index % 2 == 0 else (True, False):
                times[jit].append(steps[jit].step())
        default_ms, xla_ms = (1000 * float(np.median(times[j])) for j in (False, True))
        return xla_first, default_ms, xla_ms, TIMED_STEPS, None
    except Exception as exc:  # XLA's failures come as assorted tf.errors and more
        error = _error_text(exc)
        logging.warning("train.jit_compile=auto: XLA failed, training without it: %s", error)
        return math.inf, None, math.inf, 0, error
