"""Training callbacks: atomic checkpoints and backups, a divergence guard that names the bad loss.

Keras' own ModelCheckpoint and BackupAndRestore write straight to the final path, so a kill during
a save can leave a half-written file under the good name; and after TerminateOnNaN stops a run,
the epoch-end callbacks would still save the diverged weights. These callbacks write to a
temporary file and rename it into place, and never save a model whose logs are not finite. They
use only public Keras API: the backup is read before `fit` (`restore_backup`), which then starts
at `initial_epoch`.
"""

from __future__ import annotations

import math
import os
import time

import h5py
import keras
import numpy as np
from absl import logging

from mhp_keras.config.defaults import base_config
from mhp_keras.errors import UserError
from mhp_keras.io_utils import atomic_path, ensure_free_space, needed_bytes

EPOCH_ATTR = "mhp_keras_epoch"
BACKUP_FILE = "latest.weights.h5"
# The callbacks' defaults are the config's (`train.*`), read from where they are defined.
_TRAIN = base_config().train


def non_finite_logs(logs) -> list[str]:
    """Names of the logged values that are NaN or infinite."""
    bad = []
    for name, value in (logs or {}).items():
        try:
            if not math.isfinite(float(value)):
                bad.append(name)
        except (TypeError, ValueError):
            continue
    return bad


class DivergenceGuard(keras.callbacks.TerminateOnNaN):
    """Stops `fit` when a logged loss becomes NaN or infinite, or spikes, and remembers which and
    when.

    The spike test compares each monitored value (the epoch's running mean that Keras logs after
    every batch) with the same value over the completed epochs: with `m` the mean of the last
    three and `peak` the largest size any completed epoch reached, a value above
    `m + spike_factor * max(|m|, peak, 1)` is a spike. The peak keeps a normal rise from being a
    spike: a VAE's KL often starts high, falls near 0 and then climbs tenfold as the posterior
    comes into use, while a divergence leaves every earlier value far behind (both as measured:
    docs/results.md#training-stability). It starts once three epochs have completed (after a
    rollback or a resume, three more). `spike_factor=0` turns it off; the default is
    `train.spike_factor`'s.

    `self.diverged` is None, or a message such as "training diverged: loss=nan at epoch 3, step
    17 (global step 97)". The callbacks that write files skip an epoch the guard flagged, so a
    diverged epoch is neither saved nor logged; the trainer then rolls back or raises.
    """

    HISTORY = 3  # completed epochs in the spike test's reference

    def __init__(self, spike_factor: float = _TRAIN.spike_factor, monitor=("loss", "kl")):
        super().__init__()
        self.spike_factor = float(spike_factor)
        self.monitor = tuple(monitor)
        self.diverged = None
        self.epoch = 0
        self._global_step = 0
        self._history: dict[str, list[tuple[int, float]]] = {}  # name -> (epoch, value)

    def reset(self) -> None:
        """Clears the flag, for a `fit` that continues after a rollback."""
        self.diverged = None

    def forget_after(self, completed_epochs: int) -> None:
        """Drops the spike test's reference values of the epochs a rollback undid."""
        self._history = {
            name: [(e, v) for e, v in values if e < completed_epochs]
            for name, values in self._history.items()
        }

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _spikes(self, logs) -> list[str]:
        if self.spike_factor <= 0:
            return []
        found = []
        for name in self.monitor:
            values = [v for _, v in self._history.get(name, [])]
            past = values[-self.HISTORY :]
            if name not in logs or len(past) < self.HISTORY:
                continue
            reference = sum(past) / len(past)
            peak = max(abs(v) for v in values)
            limit = reference + self.spike_factor * max(abs(reference), peak, 1.0)
            if float(logs[name]) > limit:
                found.append(
                    f"{name}={float(logs[name]):.6g} (over {limit:.6g}, {self._mean_words})"
                )
        return found

    @property
    def _mean_words(self) -> str:
        return (
            f"the mean of the last {self.HISTORY} epochs plus {self.spike_factor:g}x the larger "
            "of that mean and the largest epoch value so far"
        )

    def on_train_batch_end(self, batch, logs=None):
        self._global_step += 1
        if self.diverged is not None:
            return
        logs = logs or {}
        bad = [f"{name}={float(logs[name])}" for name in non_finite_logs(logs)]
        bad = bad or self._spikes(logs)
        if bad:
            self.diverged = (
                f"training diverged: {', '.join(bad)} at epoch {self.epoch + 1}, step "
                f"{batch + 1} (global step {self._global_step})"
            )
            logging.error(self.diverged)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged is not None or non_finite_logs(logs):
            return
        for name in self.monitor:
            if name in (logs or {}):
                self._history.setdefault(name, []).append((epoch, float(logs[name])))


def flagged(guard, logs) -> bool:
    """Whether an epoch must not be saved or logged: its losses are not finite, or `guard`
    (a DivergenceGuard or None) stopped it."""
    return bool(non_finite_logs(logs)) or (guard is not None and guard.diverged is not None)


# What a run does after its disk filled up, for the DiskFull message.
DISK_FULL_THEN = (
    "Training stopped; the last good checkpoint and resume backup are kept. Free some space and "
    "run the same command again: it resumes from the last completed epoch."
)


def state_bytes(model) -> int:
    """The bytes of the model's variables and of its optimizers' (what a save writes)."""
    variables = list(model.variables)
    for name in ("optimizer", "g_optimizer", "d_optimizer"):
        optimizer = getattr(model, name, None)
        if optimizer is not None and getattr(optimizer, "built", False):
            variables += list(optimizer.variables)
    unique = {id(v): v for v in variables}.values()
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in unique)


def check_space(model, path: str, what: str) -> None:
    """DiskFull, before anything is written, if `path`'s device cannot take a save of `model`."""
    ensure_free_space(path, needed_bytes(path, state_bytes(model)), what, DISK_FULL_THEN)


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model to `path` at every epoch end, atomically, unless the epoch's losses
    are not finite (after a divergence the previous good model stays)."""

    def __init__(self, path: str, guard: DivergenceGuard | None = None):
        super().__init__()
        self.path = path
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if flagged(self.guard, logs):
            logging.warning("Not checkpointing epoch %d: it diverged.", epoch + 1)
            return
        check_space(self.model, self.path, "the checkpoint")
        with atomic_path(self.path, suffix=os.path.splitext(self.path)[1]) as tmp:
            self.model.save(tmp, overwrite=True)


class EpochBackup(keras.callbacks.Callback):
    """Writes the resume state at every epoch end: the weights of the model and of both
    optimizers (they are attributes of ConAD, so `save_weights` includes them) and the number of
    completed epochs, in one file replaced by one atomic rename, so a kill at any moment loses no
    epoch and repeats none. `restore_backup` reads it before the next `fit`."""

    def __init__(self, backup_dir: str, guard: DivergenceGuard | None = None):
        super().__init__()
        self.path = backup_path(backup_dir)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if flagged(self.guard, logs):
            logging.warning("Not backing up epoch %d: it diverged.", epoch + 1)
            return
        check_space(self.model, self.path, "the resume backup")
        write_backup(self.model, self.path, epoch + 1)


class GuardedCSVLogger(keras.callbacks.CSVLogger):
    """CSVLogger that leaves out an epoch the guard stopped, so that after a rollback the epoch
    that is run again has one row, like every other."""

    def __init__(self, filename: str, guard: DivergenceGuard, append: bool = True):
        super().__init__(filename, append=append)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if not flagged(self.guard, logs):
            super().on_epoch_end(epoch, logs)


class GuardedTensorBoard(keras.callbacks.TensorBoard):
    """TensorBoard that leaves out an epoch the guard stopped (see GuardedCSVLogger)."""

    def __init__(self, log_dir: str, guard: DivergenceGuard):
        super().__init__(log_dir)
        self.guard = guard

    def on_epoch_end(self, epoch, logs=None):
        if not flagged(self.guard, logs):
            super().on_epoch_end(epoch, logs)


class Throughput(keras.callbacks.Callback):
    """Adds `examples_per_sec` to each epoch's logs (so to history.csv and TensorBoard): training
    examples (images, or tiles with data.crop=tile) per second of the epoch's training steps,
    from the epoch's start to its last step (validation left out); and `epoch_seconds`, the
    epoch's whole wall time with its validation, whose sum over history.csv is a resumed run's
    training time.

    The examples are `examples_per_epoch` when the pipeline knows them, else the steps times the
    global `batch_size` (then an epoch's last, partial batch counts as a full one).
    """

    def __init__(self, batch_size: int, examples_per_epoch: int | None = None):
        super().__init__()
        self.batch_size, self.examples_per_epoch = batch_size, examples_per_epoch
        self._start, self._end, self._steps = 0.0, 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._end, self._steps = time.perf_counter(), self._steps + 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or not self._steps:
            return
        examples = self.examples_per_epoch or self._steps * self.batch_size
        logs["examples_per_sec"] = examples / max(self._end - self._start, 1e-9)
        logs["epoch_seconds"] = time.perf_counter() - self._start


def write_backup(model, path: str, completed_epochs: int, attrs: dict | None = None) -> None:
    """The weights of the model and both optimizers, and the epoch count (and any other `attrs`),
    in one atomic file."""
    with atomic_path(path, suffix=".weights.h5") as tmp:
        model.save_weights(tmp, overwrite=True)
        with h5py.File(tmp, "a") as f:
            f.attrs[EPOCH_ATTR] = completed_epochs
            for name, value in (attrs or {}).items():
                f.attrs[name] = value


def backup_path(backup_dir: str) -> str:
    return os.path.join(backup_dir, BACKUP_FILE)


def restore_backup(model, backup_dir: str) -> int:
    """Loads the backup in `backup_dir` into a built and compiled `model`; returns the number of
    completed epochs, which is `fit`'s `initial_epoch` (0 when there is no backup)."""
    path = backup_path(backup_dir)
    if not os.path.exists(path):
        return 0
    try:
        with h5py.File(path, "r") as f:
            epoch = int(f.attrs[EPOCH_ATTR])
        model.load_weights(path)
    except (OSError, KeyError, ValueError) as e:
        # A backup is only ever replaced whole, so a damaged one was cut short from outside: a
        # killed copy, a full disk on another machine, a sync tool.
        reason = str(e).split("\n")[0][:200]
        raise UserError(
            f"the resume backup {path} cannot be read ({reason}); it was probably cut short (a "
            "killed copy or a full disk). Delete it to train this --workdir again from the start, "
            "or pass --overwrite to discard the whole run."
        ) from None
    logging.info("Resumed from %s after epoch %d.", path, epoch)
    return epoch
