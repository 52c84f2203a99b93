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

import h5py
import keras
from absl import logging

from mhp_keras.io_utils import atomic_path

EPOCH_ATTR = "mhp_keras_epoch"
BACKUP_FILE = "latest.weights.h5"


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
    """TerminateOnNaN that checks every logged loss and remembers which went bad, and when.

    `self.diverged` is None, or a message such as "loss 'd_loss' became nan at epoch 3, step 17
    (global step 97)", which the trainer raises after `fit` returns.
    """

    def __init__(self):
        super().__init__()
        self.diverged = None
        self._epoch = 0
        self._global_step = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._global_step += 1
        bad = non_finite_logs(logs)
        if bad and self.diverged is None:
            values = ", ".join(f"{name}={float(logs[name])}" for name in bad)
            self.diverged = (
                f"training diverged: {values} at epoch {self._epoch + 1}, step {batch + 1} "
                f"(global step {self._global_step})"
            )
            logging.error(self.diverged)
            self.model.stop_training = True


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model to `path` at every epoch end, atomically, unless the epoch's losses
    are not finite (after a divergence the previous good model stays)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if non_finite_logs(logs):
            logging.warning("Not checkpointing epoch %d: its losses are not finite.", epoch + 1)
            return
        with atomic_path(self.path, suffix=os.path.splitext(self.path)[1]) as tmp:
            self.model.save(tmp, overwrite=True)


class EpochBackup(keras.callbacks.Callback):
    """Writes the resume state at every epoch end: the weights of the model and of both
    optimizers (they are attributes of ConAD, so `save_weights` includes them) and the number of
    completed epochs, in one file replaced by one atomic rename, so a kill at any moment loses no
    epoch and repeats none. `restore_backup` reads it before the next `fit`."""

    def __init__(self, backup_dir: str):
        super().__init__()
        self.path = backup_path(backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        if non_finite_logs(logs):
            logging.warning("Not backing up epoch %d: its losses are not finite.", epoch + 1)
            return
        with atomic_path(self.path, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp, overwrite=True)
            with h5py.File(tmp, "a") as f:
                f.attrs[EPOCH_ATTR] = epoch + 1


def backup_path(backup_dir: str) -> str:
    return os.path.join(backup_dir, BACKUP_FILE)


def restore_backup(model, backup_dir: str) -> int:
    """Loads the backup in `backup_dir` into a built and compiled `model`; returns the number of
    completed epochs, which is `fit`'s `initial_epoch` (0 when there is no backup)."""
    path = backup_path(backup_dir)
    if not os.path.exists(path):
        return 0
    model.load_weights(path)
    with h5py.File(path, "r") as f:
        epoch = int(f.attrs[EPOCH_ATTR])
    logging.info("Resumed from %s after epoch %d.", path, epoch)
    return epoch
