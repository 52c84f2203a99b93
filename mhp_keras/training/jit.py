"""`train.jit_compile=auto`: train with XLA only where it is faster on the machine that trains.

XLA's effect on this model depends on the CPU: `jit_compile=True` was 0.70x on a 2-core Intel Xeon
with AVX-512 and 1.40x on a 2-core AMD EPYC without it (benchmarks/README.md), so no fixed default
is right everywhere. With "auto", `resolve` times real training steps of both settings just before
`fit` and compiles the trained model with the faster one:

- The steps run on a throw-away model built from the same config, inside the same
  `tf.distribute` scope, after the trained model has been built and restored. The trained model's
  weights, optimizer state and step counter (which seeds the step's random draws) are never
  touched, and the Python and NumPy random states are put back afterwards, so a run with "auto"
  trains exactly as a run forced to the chosen setting (a test checks the weights).
- The batches are real training images at the training shape, held in memory so that the input
  pipeline adds no noise. Each setting gets `WARMUP_STEPS` untimed steps (the first traces, and for
  XLA compiles) and then `TIMED_STEPS` timed steps, interleaved round by round so that drifting
  load hits both alike; a setting's time is the median.
- XLA's compile takes seconds (15-22 s measured here, 3-6x the default's first step), so it is
  only tried when it fits in `TRIAL_BUDGET` of the predicted training time; a run of fewer than
  `MIN_STEPS` steps builds nothing at all. XLA then wins only if it is more than `MIN_SPEEDUP`
  faster and its extra compile in `fit` is repaid by the steps left. An XLA that fails to compile
  or run falls back to the default, with the error logged. Keras never XLA-compiles under op
  determinism (`train.deterministic=True`), so nothing is timed then.
- With more than one replica (`--strategy=mirrored` on several devices, multi-worker) XLA is not
  tried, as Keras's own `jit_compile="auto"` never uses it under `tf.distribute`: on CPUs XLA has
  no collectives, and such a failed attempt, although caught, crashed the workers at exit.
- The choice is stored in the resume state's folder (`<workdir>/backup/jit_choice.json`), which
  `--overwrite` clears with the backup, and a resumed run reuses it, so every epoch of a run trains
  with the same setting.

"true" / "false" force the setting; nothing is timed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import time
import warnings

import numpy as np
import tensorflow as tf
from absl import logging

from mhp_keras.data.pipeline import make_dataset
from mhp_keras.hardware import cpu_model_name
from mhp_keras.io_utils import write_json_atomic

AUTO = "auto"
# What the config may say, as the docs and errors spell it; `parse_setting` also takes booleans,
# "True"/"False" in any case and "1"/"0".
SETTINGS = ("auto", "true", "false")
_TEXT = {"auto": AUTO, "true": True, "1": True, "false": False, "0": False}

# Untimed steps per setting, the first (tracing, or XLA compiling) one included. The step after
# the first was already at its steady time here; one more absorbs stragglers.
WARMUP_STEPS = 3
# Timed steps per setting, one per round. Single steps moved by +-20 % under the load of a shared
# 2-core machine; the median of ten is within about 5 %, which tells the 0.70x and 1.40x measured
# on two machines from 1x, for a few seconds of steps.
TIMED_STEPS = 10
# XLA's first step (trace + compile) over the default's first step (trace), measured 3.3x to 6.1x
# on a loaded 2-core Xeon (16x16 to 32x32x3 models); predicts the trial's cost before paying it.
XLA_COMPILE_OVER_TRACE = 5.0
# The XLA trial is skipped when its predicted compile exceeds this fraction of the training time.
TRIAL_BUDGET = 0.05
# Below this many steps left nothing is built or timed. The default's first step took 30-150
# steps' time here, so XLA's predicted compile is 150-750 steps and needs 3,000-15,000 steps of
# training to fit in TRIAL_BUDGET: a shorter run would pay for a throw-away model to learn that.
MIN_STEPS = 2000
# XLA must be faster than this to be chosen, as the benchmark's rule for changing a default:
# measurements on a shared machine move by a few percent.
MIN_SPEEDUP = 1.05
CHOICE_FILE = "jit_choice.json"
NO_XLA = "Keras does not XLA-compile this model here (never with train.deterministic=True)"
MANY_REPLICAS = "XLA is not tried with {} replicas (on CPUs XLA has no collectives)"
# How many distinct real batches the calibration cycles through.
CALIBRATION_BATCHES = 4


def parse_setting(value) -> str | bool:
    """`train.jit_compile` as the config holds it -> "auto", True or False; ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in _TEXT:
        raise ValueError(f"train.jit_compile={value!r}: expected one of {list(SETTINGS)}.")
    return _TEXT[text]


def is_valid_setting(value) -> bool:
    try:
        parse_setting(value)
    except ValueError:
        return False
    return True


def compile_flag(value) -> bool:
    """The `jit_compile` a model is compiled with before `resolve`: forced, or False for "auto"
    (`resolve` switches it before `fit` traces the step)."""
    return parse_setting(value) is True


def decide(
    default_step_ms: float,
    xla_step_ms: float | None,
    *,
    default_first_s: float = 0.0,
    xla_first_s: float = 0.0,
    steps_left: int | None = None,
) -> tuple[bool, str]:
    """(use XLA, why) from the measured medians; `xla_step_ms` None (or not finite) = XLA failed.

    The trained model compiles its step again in `fit`, so XLA must also repay its extra compile
    time over the steps left in the run.
    """
    if xla_step_ms is None or not math.isfinite(xla_step_ms):
        return False, "XLA failed"
    speedup = default_step_ms / xla_step_ms
    if speedup <= MIN_SPEEDUP:
        return False, f"XLA is {speedup:.2f}x the default's speed, not above {MIN_SPEEDUP}x"
    if steps_left is not None:
        saved = steps_left * (default_step_ms - xla_step_ms) / 1000
        extra = xla_first_s - default_first_s
        if saved <= extra:
            return False, (
                f"XLA is {speedup:.2f}x faster but would save {saved:.1f} s over the "
                f"{steps_left} steps left, less than its {extra:.1f} s of extra compile time"
            )
    return True, f"XLA is {speedup:.2f}x faster"


def xla_trial_fits(default_first_s: float, default_step_ms: float, steps_left: int | None):
    """(try XLA, why not): whether XLA's predicted compile fits in `TRIAL_BUDGET` of training."""
    if steps_left is None:
        return True, ""
    training_s = steps_left * default_step_ms / 1000
    compile_s = XLA_COMPILE_OVER_TRACE * default_first_s
    if compile_s <= TRIAL_BUDGET * training_s:
        return True, ""
    return False, (
        f"XLA not tried: its compile (about {compile_s:.0f} s predicted) would cost more than "
        f"{TRIAL_BUDGET:.0%} of the ~{training_s:.0f} s of training left"
    )


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


class _Steps:
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
def _preserved_random_state():
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


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def calibrate(build, dataset, strategy, steps_left: int | None, clock=time.perf_counter) -> dict:
    """Times the default and the XLA step on a throw-away model from `build(jit_compile)` and
    returns the record of the choice (see `resolve`)."""
    start = clock()
    xla_first = xla_ms = math.inf
    timed, error = 0, None
    with _preserved_random_state(), strategy.scope():
        model = build(False)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        steps = {False: _Steps(model, False, iterator, clock)}
        default_first = steps[False].step()
        warm = [steps[False].step() for _ in range(WARMUP_STEPS - 1)]
        default_ms = 1000 * float(np.median(warm))
        trial, reason = xla_trial_fits(default_first, default_ms, steps_left)
        if trial:
            try:
                steps[True] = _Steps(model, True, iterator, clock)
                xla_first = steps[True].step()
                for _ in range(WARMUP_STEPS - 1):
                    steps[True].step()
                times = {False: [], True: []}
                for round_index in range(TIMED_STEPS):
                    # Alternating which goes first cancels any effect of the order.
                    for jit in (False, True) if round_index % 2 == 0 else (True, False):
                        times[jit].append(steps[jit].step())
                timed = TIMED_STEPS
                default_ms, xla_ms = (1000 * float(np.median(times[j])) for j in (False, True))
            except Exception as exc:  # XLA's failures come as assorted tf.errors and more
                error = _error_text(exc)
                xla_first = xla_ms = math.inf
                logging.warning(
                    "train.jit_compile=auto: XLA failed, training without it: %s", error
                )
            chosen, reason = decide(
                default_ms,
                xla_ms,
                default_first_s=default_first,
                xla_first_s=xla_first,
                steps_left=steps_left,
            )
        else:
            chosen = False
        # The throw-away model and its traced steps can hold hundreds of MB: free them now.
        del model, steps, iterator
        gc.collect()
    return {
        "setting": AUTO,
        "source": "calibrated",
        "chosen": chosen,
        "reason": reason,
        "default_step_ms": default_ms,
        "xla_step_ms": _finite_or_none(xla_ms),
        "default_first_step_s": default_first,
        "xla_first_step_s": _finite_or_none(xla_first),
        "xla_error": error,
        "warmup_steps": WARMUP_STEPS,
        "timed_steps": timed,
        "steps_left": steps_left,
        "cpu": cpu_model_name(),
        "calibration_seconds": clock() - start,
    }


def remaining_steps(config, steps_per_epoch: int | None, n_images: int, initial_epoch: int) -> int:
    """Training steps still to run. Without a known epoch length (tiles) every image gives at
    least one example, so a lower bound."""
    per_epoch = steps_per_epoch or math.ceil(n_images / config.data.batch_size)
    return max(0, int(config.train.epochs) - initial_epoch) * per_epoch


def describe(record: dict) -> str:
    """A calibration record in one line, for the log."""

    def seconds(key, unit):
        value = record.get(key)
        return "-" if value is None else f"{value:.1f} {unit}"

    return (
        f"default step {seconds('default_step_ms', 'ms')}, XLA step {seconds('xla_step_ms', 'ms')}"
        f" (first steps {seconds('default_first_step_s', 's')} and "
        f"{seconds('xla_first_step_s', 's')}); {record['reason']}: training "
        f"{'with' if record['chosen'] else 'without'} XLA. Calibration took "
        f"{record['calibration_seconds']:.1f} s."
    )


def _skipped(reason: str) -> dict:
    logging.info("train.jit_compile=auto: training without XLA: %s.", reason)
    return {
        "setting": AUTO,
        "source": "skipped",
        "chosen": False,
        "reason": reason,
        "calibration_seconds": 0.0,
    }


def keras_allows_xla(model) -> bool:
    """Whether Keras would XLA-compile `model`'s step here. It refuses on some platforms and
    whenever op determinism is on (`train.deterministic=True`); then there is nothing to time."""
    previous = model.jit_compile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns when it refuses; that is the question
        model.jit_compile = True
        allowed = bool(model.jit_compile)
    model.jit_compile = previous
    return allowed


def _stored_choice(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logging.warning("Ignoring unreadable %s (%s); calibrating again.", path, exc)
        return None
    if not isinstance(stored, dict) or not isinstance(stored.get("chosen"), bool):
        logging.warning("Ignoring %s: it holds no choice; calibrating again.", path)
        return None
    return stored


def resolve(
    config,
    strategy,
    model,
    train_images,
    state_dir: str,
    *,
    steps_per_epoch: int | None,
    initial_epoch: int,
    build,
) -> dict:
    """Sets `model.jit_compile` (before `fit` traces the step) from `config.train.jit_compile`
    and returns the record for `metrics.json`: the setting, `chosen`, `source` (forced,
    calibrated, reused or skipped) and, when calibrated, both timings and the cost.

    `build(jit_compile)` builds and compiles a model of the same config under `strategy` (the
    throw-away one); the choice of a calibration is stored in `state_dir` and reused on resume.
    """
    setting = parse_setting(config.train.jit_compile)
    path = os.path.join(state_dir, CHOICE_FILE)
    if setting != AUTO:
        record = {"setting": str(setting).lower(), "source": "forced", "chosen": setting}
    elif not keras_allows_xla(model):
        record = _skipped(NO_XLA)
    elif strategy.num_replicas_in_sync > 1:
        record = _skipped(MANY_REPLICAS.format(strategy.num_replicas_in_sync))
    elif (stored := _stored_choice(path)) is not None:
        record = {**stored, "source": "reused", "calibration_seconds": 0.0}
        logging.info(
            "train.jit_compile=auto: training %s XLA, as stored in %s.",
            "with" if record["chosen"] else "without",
            path,
        )
    else:
        left = remaining_steps(config, steps_per_epoch, len(train_images), initial_epoch)
        if left < MIN_STEPS:
            record = _skipped(f"{left} training steps left, too few to repay XLA's compile")
        else:
            record = calibrate(build, calibration_dataset(train_images, config), strategy, left)
            logging.info("train.jit_compile=auto: %s", describe(record))
        # Stored even when skipped: a resumed run that was given more epochs keeps the setting.
        write_json_atomic(path, record)
    model.jit_compile = record["chosen"]
    if record["chosen"] and not model.jit_compile:  # forced True where Keras refuses XLA
        record["chosen"], record["reason"] = False, NO_XLA
        logging.warning("train.jit_compile=true, but training without XLA: %s.", NO_XLA)
    # `fit` reuses a train_function that already exists; this one is traced with the choice.
    model.make_train_function(force=True)
    return record
