"""One experiment end to end: train, pick the threshold, evaluate, export. `train_main.py` is a thin
flag parser around `run`.

Files in the workdir: `config.json` (the config of the run in it), `model.keras` (the trained model,
threshold included), `checkpoints/last.keras`, `backup/` (resume state), `logs/` (TensorBoard),
`metrics.json`, `scores.csv`, `report/` and `export/<model_name>/<version>/` (TF Serving).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import keras
import tensorflow as tf
from absl import logging

import mhp_keras
from mhp_keras.config import legacy
from mhp_keras.config.validation import validate_config
from mhp_keras.data import load_data
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.data.training_tiles import examples_per_epoch, resolve_crop
from mhp_keras.errors import UserError
from mhp_keras.io_utils import atomic_path, write_json_atomic
from mhp_keras.models import build_conad
from mhp_keras.scoring.evaluation import calibrate, evaluate
from mhp_keras.training import callbacks as cb
from mhp_keras.training import distribute
from mhp_keras.training import history as run_history
from mhp_keras.training import jit as jit_calibration
from mhp_keras.training import modes as mode_registry
from mhp_keras.training.diagnostics import MechanismDiagnostics
from mhp_keras.training.evolving_wta import EvolvingWTA
from mhp_keras.training.health import TrainingHealth
from mhp_keras.training.modes import DEFAULT as DEFAULT_MODE
from mhp_keras.training.modes import EXPERIMENT_MODES as MODES
from mhp_keras.training.recovery import Recovery
from mhp_keras.training.runtime import (  # noqa: F401  (the names callers import from here)
    PRECISION_POLICIES,
    auto_precision,
    resolve_precision,
    set_up_runtime,
)
from mhp_keras.training.selection import BestWeights, keep_best
from mhp_keras.training.stream import repeated, resumed_stream
from mhp_keras.training.workdir_lock import workdir_lock

# Keys that may change between runs in one workdir without making it a different model.
RESUMABLE_KEYS = ("train.epochs", "eval", *legacy.LOCATION_KEYS)


# Training images in the fixed batch the mechanism diagnostics are measured on every epoch.
DIAGNOSTIC_IMAGES = 16


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint was kept."""


def config_dict(config) -> dict:
    return json.loads(config.to_json_best_effort())


def _resumable(key: str) -> bool:
    return legacy.is_under(key, RESUMABLE_KEYS)


def prepare_workdir(config, workdir: str, overwrite: bool) -> None:
    """Refuses to train into a workdir holding a run with another config, unless --overwrite."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        changed = [k for k in legacy.changed_keys(stored, config_dict(config)) if not _resumable(k)]
        if changed and not overwrite:
            new = legacy.flatten(config_dict(config))
            old = legacy.with_values_before(stored, config_dict(config))
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
            raise UserError(
                f"--workdir={workdir} holds a run with a different config ({details}). Use another "
                "--workdir, or pass --overwrite to discard that run's checkpoints and start afresh."
            )
        if changed:
            for name in ("backup", "backup_workers", "checkpoints", "model.keras"):
                target = os.path.join(workdir, name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
    write_json_atomic(path, config_dict(config))


def make_optimizers(config):
    def adam(lr):
        return keras.optimizers.Adam(lr, beta_1=config.train.beta_1)

    g, d = adam(config.train.g_lr), adam(config.train.d_lr)
    if resolve_precision(config.train.mixed_precision) == "float16":
        # float16 gradients underflow without loss scaling; bfloat16 has float32's range.
        g, d = keras.optimizers.LossScaleOptimizer(g), keras.optimizers.LossScaleOptimizer(d)
    return g, d


def fit_verbosity(config) -> int:
    verbose = config.train.verbose
    if verbose < 0:  # auto: a progress bar on a terminal, one line per epoch in logs
        return 1 if sys.stdout.isatty() else 2
    return verbose


def build_and_compile(config, strategy, jit_compile: bool | None = None):
    """`jit_compile` overrides `train.jit_compile`, whose "auto" compiles without XLA until
    `jit_calibration.resolve` sets the model's choice before `fit`."""
    if jit_compile is None:
        jit_compile = jit_calibration.compile_flag(config.train.jit_compile)
    with strategy.scope():
        model = build_conad(config)
        g_opt, d_opt = make_optimizers(config)
        model.compile(g_optimizer=g_opt, d_optimizer=d_opt, jit_compile=jit_compile)
    return model


def backup_dir(workdir: str, chief: bool) -> str:
    """Where this process keeps its resume state: every worker must back up, but not over the
    chief's files."""
    if chief:
        return os.path.join(workdir, "backup")
    _, index = distribute.task_info()
    return os.path.join(workdir, "backup_workers", f"worker_{index}")


def training_callbacks(config, workdir: str, data, chief: bool):
    """The divergence guard, training health, backup, checkpoint, loggers and the optional AUROC
    callback, in the order they must run at an epoch's end (the guard and the health signals
    first, so that what writes files and logs sees them). Returns (callbacks, guard, health)."""
    t = config.train
    guard = cb.DivergenceGuard(spike_factor=t.spike_factor)
    health = TrainingHealth.from_config(config)
    # First, so that every logger sees the epoch's examples_per_sec.
    callbacks = [
        guard,
        cb.Throughput(config.data.batch_size, examples_per_epoch(config, data.train)),
    ]
    if chief:  # measured before health reads it and the loggers write it
        callbacks.append(MechanismDiagnostics(diagnostic_images(data.train, config)))
    if config.loss.evolving_wta_epochs:  # before the loggers, which write its wta_top_k
        callbacks.append(EvolvingWTA(config.loss.evolving_wta_epochs))
    callbacks += [health, cb.EpochBackup(backup_dir(workdir, chief), guard)]
    if t.keep_weights == "best_val":
        callbacks.append(BestWeights(backup_dir(workdir, chief), guard))
    if chief:
        callbacks += [
            cb.AtomicModelCheckpoint(os.path.join(workdir, "checkpoints", "last.keras"), guard),
            cb.GuardedTensorBoard(os.path.join(workdir, "logs"), guard),
            cb.GuardedCSVLogger(os.path.join(workdir, "history.csv"), guard),
        ]
        if config.eval.every_epochs:
            from mhp_keras.scoring.auroc_callback import AUROCCallback

            callbacks.append(AUROCCallback(data, config, os.path.join(workdir, "logs", "eval")))
    return callbacks, guard, health


def diagnostic_images(images, config, count: int = DIAGNOSTIC_IMAGES):
    """A fixed batch of training images, as the model sees them, for `MechanismDiagnostics`."""
    ds = dataset_for_split(images, config, training=False)
    return next(iter(ds.unbatch().take(count).batch(count)))["image"].numpy()


def train(config, data, workdir: str, strategy_name: str = "default", extra_callbacks=()):
    """Fits a fresh (or resumed) model, sets its threshold and saves `model.keras` atomically.

    A divergence rolls back to the last good epoch with lower learning rates (`recovery.py`), up
    to `train.recoveries` times; after that it raises TrainingDiverged. `extra_callbacks` run
    after the trainer's own.
    """
    strategy = distribute.make_strategy(strategy_name)
    chief = distribute.writes_run_files(strategy_name)
    # data.crop=auto becomes tile or none here, before the model is built (score.tiling=auto).
    config = resolve_crop(config, data.train)
    train_ds, steps_per_epoch = repeated(dataset_for_split(data.train, config, training=True))
    # The validation loss on validation images cut as the training images are (same scale).
    val_ds = (
        dataset_for_split(data.val, config, training=True, validation=True)
        if len(data.val)
        else None
    )
    model = build_and_compile(config, strategy)
    callbacks, guard, health = training_callbacks(config, workdir, data, chief)
    callbacks += list(extra_callbacks)
    backups = backup_dir(workdir, chief)
    recovery = Recovery.from_config(config, backups)
    start = time.perf_counter()
    with strategy.scope():
        initial_epoch = cb.restore_backup(model, backups)
        recovery.apply_learning_rates(model)
    # After the build and restore, so the calibration's throw-away model cannot touch them.
    jit = jit_calibration.resolve(
        config,
        strategy,
        model,
        data.train,
        backups,
        steps_per_epoch=steps_per_epoch,
        initial_epoch=initial_epoch,
        build=lambda jit_compile: build_and_compile(config, strategy, jit_compile),
    )
    recovery.save_start(model, initial_epoch)
    if chief:
        run_history.keep_epochs_before(workdir, initial_epoch)
    first_epoch, epoch = initial_epoch, initial_epoch
    while True:
        model.fit(
            resumed_stream(train_ds, epoch, steps_per_epoch),
            validation_data=val_ds,
            initial_epoch=epoch,
            epochs=config.train.epochs,
            steps_per_epoch=steps_per_epoch,
            callbacks=callbacks,
            verbose=fit_verbosity(config),
            shuffle=False,  # the pipeline shuffles, with the config's seed
        )
        if not guard.diverged:
            break
        if recovery.exhausted:
            kept = os.path.join(workdir, "checkpoints", "last.keras")
            raise TrainingDiverged(
                f"{guard.diverged}, after {len(recovery.records)} automatic recoveries "
                f"(config.train.recoveries={recovery.limit}). Training stopped; the last good "
                f"checkpoint is kept at {kept} (if any epoch finished). Try a lower "
                "train.g_lr/train.d_lr or a smaller loss.adv_weight."
            )
        with strategy.scope():
            epoch = recovery.roll_back(model, guard)
    seconds = time.perf_counter() - start
    rows = run_history.history_rows(workdir)
    with strategy.scope():
        weights = keep_best(model, callbacks, rows)
    values, source = calibrate(model, data.val, config)
    model.set_calibration(**values)
    threshold = values["threshold"]
    if chief:
        save_model(model, os.path.join(workdir, "model.keras"))
    logging.info("Threshold %.6g from %s.", threshold, source)
    run_epochs = config.train.epochs - first_epoch
    return model, {
        "train_seconds": seconds,
        # Every epoch's, this process's and earlier ones' (a resumed run's whole training).
        "train_seconds_all_epochs": run_history.all_epochs_seconds(rows),
        "epochs": {"first": first_epoch if run_epochs else None, "run": run_epochs},
        "jit_compile": jit,
        "recoveries": recovery.records,
        "health_warnings": health.warnings,
        "mechanism": run_history.mechanism(callbacks, rows),
        "weights": weights,
    }


def save_model(model, path: str) -> None:
    cb.check_space(model, path, "the trained model")
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def load_trained(workdir: str):
    path = os.path.join(workdir, "model.keras")
    if not os.path.exists(path):
        raise UserError(
            f"No trained model at {path}: run with --mode=train (or train_and_evaluate) and this "
            "--workdir first."
        )
    try:
        return mhp_keras.load_model(path)
    except ValueError as e:  # mhp_keras.load_model words a damaged file as such
        raise UserError(str(e)) from None


def export(model, config, workdir: str) -> str:
    from mhp_keras.serving.export import export_saved_model

    return export_saved_model(model, os.path.join(workdir, "export"), model_name=config.model_name)


def run(
    config,
    workdir: str,
    mode: str = DEFAULT_MODE,
    strategy: str = "default",
    overwrite: bool = False,
) -> dict:
    """Runs `mode` (one of `MODES`, described in mhp_keras/training/modes.py) and returns its
    summary (the metrics for modes that evaluate).

    The run holds the workdir's lock (`mhp_keras.training.workdir_lock`): a second run on the same
    workdir is refused while this one is alive. Non-chief workers of a multi-worker run share the
    chief's workdir and take no lock.
    """
    if mode not in MODES:
        raise UserError(f"--mode={mode!r}: expected one of {list(MODES)}.")
    validate_config(config)
    # evaluate and export on a workdir that does not exist fail below, with a message; the lock
    # must not create the folder first.
    lock = distribute.writes_run_files(strategy) and (
        os.path.isdir(workdir) or mode_registry.MODES[mode].creates_workdir
    )
    with workdir_lock(workdir, mode, enabled=lock):
        return _run(config, workdir, mode, strategy, overwrite)


# What metrics.json records of the training itself; --mode=evaluate keeps these from the run's
# earlier metrics.json, since it re-scores and must not erase how the model was trained.
TRAINING_KEYS = (
    "epochs",
    "jit_compile",
    "recoveries",
    "health_warnings",
    "mechanism",
    "weights",
    "export",
)
TRAINING_TIMINGS = ("train_seconds", "train_seconds_all_epochs")


def _training_summary(workdir: str) -> tuple[dict, dict]:
    """The training part of the workdir's metrics.json (TRAINING_KEYS, and TRAINING_TIMINGS of
    its timings), or empty dicts without a readable one."""
    try:
        with open(os.path.join(workdir, "metrics.json")) as f:
            earlier = json.load(f)
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(earlier, dict):
        return {}, {}
    timings = earlier.get("timings") if isinstance(earlier.get("timings"), dict) else {}
    return (
        {k: earlier[k] for k in TRAINING_KEYS if k in earlier},
        {k: timings[k] for k in TRAINING_TIMINGS if k in timings},
    )


def _run(config, workdir: str, mode: str, strategy: str, overwrite: bool) -> dict:
    set_up_runtime(config)
    summary: dict = {}
    if mode == "export":
        summary["export"] = export(load_trained(workdir), config, workdir)
        return summary
    data = load_data(config)
    timings = {}
    if mode in ("train", "train_and_evaluate"):
        chief = distribute.writes_run_files(strategy)
        if chief:
            prepare_workdir(config, workdir, overwrite)
        model, train_info = train(config, data, workdir, strategy)
        timings["train_seconds"] = train_info["train_seconds"]
        timings["train_seconds_all_epochs"] = train_info["train_seconds_all_epochs"]
        summary.update({k: train_info[k] for k in TRAINING_KEYS if k in train_info})
        if not chief:  # the chief evaluates and writes the run's files
            return summary
        summary["export"] = export(model, config, workdir)
    else:
        model = load_trained(workdir)
        summary, timings = _training_summary(workdir)
    if mode == "train":
        return summary
    start = time.perf_counter()
    threshold = float(model.threshold.numpy())
    metrics = evaluate(model, data, config, workdir, threshold=threshold, training=summary)
    timings["eval_seconds"] = time.perf_counter() - start
    metrics.update(summary)
    metrics.update(
        normal_class=data.normal_class,
        n_train=len(data.train),
        n_val=len(data.val),
        dataset=config.data.name,
        timings=timings,
        config=config_dict(config),
        versions={"tensorflow": tf.__version__, "keras": keras.__version__},
    )
    write_json_atomic(os.path.join(workdir, "metrics.json"), metrics)
    return metrics
