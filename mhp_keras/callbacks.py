"""Training callbacks: atomic checkpoints and backups, a divergence guard that names the bad loss.

Keras' own ModelCheckpoint and BackupAndRestore write straight to the final path, so a kill during
a save can leave a half-written file under the good name; and after TerminateOnNaN stops a run,
the epoch-end callbacks would still save the diverged weights. These subclasses write to a
temporary file and rename it into place, and never save a model whose logs are not finite.
"""

from __future__ import annotations

import math
import os

import h5py
import keras
from absl import logging

from mhp_keras.io_utils import atomic_path

EPOCH_ATTR = "mhp_keras_epoch"


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


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """ModelCheckpoint whose saves are atomic and which never saves non-finite weights."""

    def _save_model(self, epoch, batch, logs):
        if non_finite_logs(logs):
            logging.warning("Not checkpointing epoch %d: its losses are not finite.", epoch + 1)
            return
        final = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, batch, logs, final):
            return
        suffix = ".weights.h5" if self.save_weights_only else os.path.splitext(final)[1]
        with atomic_path(final, suffix=suffix) as tmp:
            if self.save_weights_only:
                self.model.save_weights(tmp, overwrite=True)
            else:
                self.model.save(tmp, overwrite=True)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """BackupAndRestore with atomic writes, skipping epochs whose losses are not finite.

    The backup holds the weights of the model and of both optimizers (they are attributes of
    ConAD, so `save_weights` includes them) and the epoch, so a killed run resumes exactly where
    its last completed epoch ended.
    """

    def __init__(self, backup_dir, **kwargs):
        kwargs.setdefault("double_checkpoint", False)  # atomic writes make the copy unnecessary
        super().__init__(backup_dir, **kwargs)

    def on_epoch_end(self, epoch, logs=None):
        if non_finite_logs(logs):
            logging.warning("Not backing up epoch %d: its losses are not finite.", epoch + 1)
            self._current_epoch = epoch + 1
            return
        super().on_epoch_end(epoch, logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        # The epoch is stored inside the weights file, so weights and epoch are replaced by one
        # atomic rename: a kill at any moment loses no epoch and repeats none.
        with atomic_path(self._weights_path, suffix=".weights.h5") as tmp:
            self.model.save_weights(filepath=tmp, overwrite=True)
            with h5py.File(tmp, "a") as f:
                f.attrs[EPOCH_ATTR] = self._current_epoch

    def _load_model(self):
        if not os.path.exists(self._weights_path):
            return
        self.model.load_weights(self._weights_path)
        with h5py.File(self._weights_path, "r") as f:
            self.model._initial_epoch = int(f.attrs[EPOCH_ATTR])
        logging.info("Resumed from %s at epoch %d.", self._weights_path, self.model._initial_epoch)
