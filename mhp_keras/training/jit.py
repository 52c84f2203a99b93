"""`train.jit_compile=auto`: train with XLA only where it is faster on the machine that trains.

XLA is slower on some CPUs and faster on others (measured: benchmarks/README.md), so no fixed
default is right everywhere. With "auto", `resolve` times
training steps of both settings just before `fit` and trains with the faster:

- on a throw-away model of the same config and `tf.distribute` scope, on real training images
  held in memory; the trained model's weights, optimizer state and step counter are never
  touched and the Python and NumPy random states are put back, so "auto" trains exactly as a
  run forced to its choice (a test checks the weights). `WARMUP_STEPS` untimed steps, then
  `TIMED_STEPS` per setting interleaved round by round; a setting's time is the median.
- by time, not step count (a 64 px step costs 20 times a 32 px one): the default's steps
  predict the run's training time (`predict`), and XLA is tried when its trial (the compile,
  estimated from the default's first step, and `TRIAL_STEPS` steps) fits in `TRIAL_BUDGET` of
  it. Under `MIN_STEPS` steps even a free compile cannot fit: nothing is built. XLA wins only if
  over `MIN_SPEEDUP` faster and its extra compile in `fit` is repaid; an XLA that fails falls
  back to the default, logged. Nothing is timed under op determinism (Keras refuses XLA), nor
  with several replicas (Keras's own "auto" never uses XLA under `tf.distribute`; on CPUs XLA
  has no collectives, and a caught failure still crashed the workers at exit).
- The choice is stored in `<workdir>/backup/jit_choice.json` (cleared by `--overwrite`) and a
  resumed run reuses it. Within `jit_shared.shared_choices` (ablation, class tables) a
  calibration is also reused by every later run of the same step cost (`jit_shared.cost_key`),
  decided again for its length. The steps are timed by `mhp_keras.training.jit_timing`.

"true" / "false" force the setting; nothing is timed.
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings

import numpy as np
from absl import logging

from mhp_keras.hardware import cpu_model_name
from mhp_keras.io_utils import write_json_atomic
from mhp_keras.training import jit_shared
from mhp_keras.training.jit_timing import (  # noqa: F401  (calibration_dataset: for resolve's callers)
    TIMED_STEPS,
    WARMUP_STEPS,
    Steps,
    calibration_dataset,
    preserved_random_state,
    time_xla,
)

AUTO = "auto"
# What the config may say, as the docs and errors spell it; `parse_setting` also takes booleans,
# "True"/"False" in any case and "1"/"0".
SETTINGS = ("auto", "true", "false")
_TEXT = {"auto": AUTO, "true": True, "1": True, "false": False, "0": False}

# XLA's first step (trace + compile) over the default's first step (trace), a middle value of the
# ratios measured in benchmarks/README.md; the trace grows with the graph, so this estimates the
# compile by the model's size before paying it.
XLA_COMPILE_OVER_TRACE = 5.0
# XLA is tried when its trial (compile and steps) is predicted to cost at most this fraction of
# the training time: a lost trial then wastes at most this much, a won one (the speed-ups in
# benchmarks/README.md) saves more than that.
TRIAL_BUDGET = 0.10
# The trial's steps beyond the compile: XLA's other warm-up steps and both settings' timed ones.
TRIAL_STEPS = WARMUP_STEPS - 1 + 2 * TIMED_STEPS
# Below this many steps left nothing is built or timed: the trial's steps alone exceed the budget.
MIN_STEPS = math.ceil(TRIAL_STEPS / TRIAL_BUDGET)
# XLA must be faster than this to be chosen, as the benchmark's rule for changing a default:
# measurements on a shared machine move by a few percent.
MIN_SPEEDUP = 1.05
CHOICE_FILE = "jit_choice.json"
NO_XLA = "Keras does not XLA-compile this model here (never with train.deterministic=True)"
MANY_REPLICAS = "XLA is not tried with {} replicas (on CPUs XLA has no collectives)"


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


def predict(default_first_s: float, default_step_ms: float, steps_left: int | None) -> dict:
    """The run's training time predicted from the default's timed steps, and XLA's cost."""
    compile_s = XLA_COMPILE_OVER_TRACE * default_first_s
    return {
        "predicted_train_s": None if steps_left is None else steps_left * default_step_ms / 1000,
        "xla_compile_estimate_s": compile_s,
        "xla_trial_estimate_s": compile_s + TRIAL_STEPS * default_step_ms / 1000,
    }


def xla_trial_fits(prediction: dict) -> tuple[bool, str]:
    """(try XLA, why not): whether XLA's predicted trial fits in `TRIAL_BUDGET` of training."""
    training_s, trial_s = prediction["predicted_train_s"], prediction["xla_trial_estimate_s"]
    if training_s is None or trial_s <= TRIAL_BUDGET * training_s:
        return True, ""
    return False, (
        f"XLA not tried: its trial (about {trial_s:.0f} s predicted, "
        f"{prediction['xla_compile_estimate_s']:.0f} s of it compiling) would cost more than "
        f"{TRIAL_BUDGET:.0%} of the ~{training_s:.0f} s of training predicted"
    )


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def calibrate(build, dataset, strategy, steps_left: int | None, clock=time.perf_counter) -> dict:
    """Times the default step on a throw-away model from `build(jit_compile)`, predicts the run
    from it, times XLA's step if its trial fits, and returns the record of the choice (see
    `resolve`). `clock` (seconds) is injectable so that tests can drive the rule."""
    start = clock()
    xla_first = xla_ms = math.inf
    timed, error = 0, None
    with preserved_random_state(), strategy.scope():
        model = build(False)
        iterator = iter(strategy.experimental_distribute_dataset(dataset))
        steps = {False: Steps(model, False, iterator, clock)}
        default_first = steps[False].step()
        warm = [steps[False].step() for _ in range(WARMUP_STEPS - 1)]
        default_ms = 1000 * float(np.median(warm))
        prediction = predict(default_first, default_ms, steps_left)
        tried, reason = xla_trial_fits(prediction)
        chosen = False
        if tried:
            xla_first, timed_ms, xla_ms, timed, error = time_xla(steps, model, iterator, clock)
            default_ms = timed_ms or default_ms
            chosen, reason = decide(
                default_ms,
                xla_ms,
                default_first_s=default_first,
                xla_first_s=xla_first,
                steps_left=steps_left,
            )
        # The throw-away model and its traced steps can hold hundreds of MB: free them now.
        del model, steps, iterator
        gc.collect()
    return {
        "setting": AUTO,
        "source": "calibrated",
        "chosen": chosen,
        "reason": reason,
        "xla_tried": tried,
        **prediction,
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
        f"{seconds('xla_first_step_s', 's')}); training predicted "
        f"{seconds('predicted_train_s', 's')}, XLA's compile "
        f"{seconds('xla_compile_estimate_s', 's')}; {record['reason']}: training "
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
    stored = jit_shared.read_json(path)
    if stored is not None and not (
        isinstance(stored, dict) and isinstance(stored.get("chosen"), bool)
    ):
        logging.warning("Ignoring %s: it holds no choice; calibrating again.", path)
        return None
    return stored


def _from_shared(key: str, steps_left: int) -> dict | None:
    """The shared calibration of this step cost decided again for `steps_left`; None: calibrate
    (none shared, or XLA was not tried on a shorter run and its trial now fits)."""
    shared = jit_shared.lookup(key)
    if not isinstance(shared, dict) or "default_step_ms" not in shared:
        return None
    default_ms, default_first = shared["default_step_ms"], shared["default_first_step_s"]
    prediction = predict(default_first, default_ms, steps_left)
    tried, reason = xla_trial_fits(prediction)
    chosen = False
    if shared.get("xla_tried"):
        chosen, reason = decide(
            default_ms,
            shared.get("xla_step_ms"),
            default_first_s=default_first,
            xla_first_s=shared.get("xla_first_step_s") or 0.0,
            steps_left=steps_left,
        )
    elif tried:
        return None
    changes = {"source": "shared", "chosen": chosen, "reason": reason, "steps_left": steps_left}
    return {**shared, **prediction, **changes, "calibration_seconds": 0.0}


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
    clock=time.perf_counter,
) -> dict:
    """Sets `model.jit_compile` (before `fit` traces the step) from `config.train.jit_compile`
    and returns the record for `metrics.json`: the setting, `chosen`, `source` (forced,
    calibrated, shared, reused or skipped) and, when calibrated, the prediction, both timings
    and the cost.

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
        key = jit_shared.cost_key(config)
        if left < MIN_STEPS:
            record = _skipped(
                f"{left} training steps left: XLA's trial ({TRIAL_STEPS} steps and a compile) "
                f"cannot fit in {TRIAL_BUDGET:.0%} of them"
            )
        elif (record := _from_shared(key, left)) is not None:
            logging.info("train.jit_compile=auto, shared by this step cost: %s", describe(record))
        else:
            dataset = calibration_dataset(train_images, config)
            record = calibrate(build, dataset, strategy, left, clock=clock)
            logging.info("train.jit_compile=auto: %s", describe(record))
            jit_shared.store(key, record)
        # Stored even when skipped: a resumed run that was given more epochs keeps the setting.
        write_json_atomic(path, record)
    model.jit_compile = record["chosen"]
    if record["chosen"] and not model.jit_compile:  # forced True where Keras refuses XLA
        record["chosen"], record["reason"] = False, NO_XLA
        logging.warning("train.jit_compile=true, but training without XLA: %s.", NO_XLA)
    # `fit` reuses a train_function that already exists; this one is traced with the choice.
    model.make_train_function(force=True)
    return record
