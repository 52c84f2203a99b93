"""Automatic recovery from a divergence: roll back to the last good epoch, lower both learning
rates, and go on.

A GAN-style run that diverges late leaves a user with a half-trained model and the advice to
lower learning rates by hand; this does it for them, a bounded number of times. The rollback
reads the same per-epoch backup a killed run resumes from (the weights of the model and both
optimizers, `callbacks.EpochBackup`), so no epoch is lost or repeated. The recoveries are kept
in the backup folder, so a run killed after one resumes with its lowered learning rates and its
remaining budget.
"""

from __future__ import annotations

import json
import os

from absl import logging

from mhp_keras.io_utils import write_json_atomic
from mhp_keras.training import callbacks as cb

RECORD_FILE = "recoveries.json"


class Recovery:
    """The recovery budget and record of one run's backup folder.

    Args:
        backup_dir: the folder of the run's `EpochBackup` (and of its record).
        limit: the number of rollbacks allowed (0: the first divergence ends the run).
        lr_factor: each rollback multiplies both learning rates by this.
        g_lr, d_lr: the configured learning rates, before any rollback.
    """

    def __init__(self, backup_dir: str, limit: int, lr_factor: float, g_lr: float, d_lr: float):
        self.backup_dir = backup_dir
        self.limit = int(limit)
        self.lr_factor = float(lr_factor)
        self.base = {"g_lr": float(g_lr), "d_lr": float(d_lr)}
        self.path = os.path.join(backup_dir, RECORD_FILE)
        self.records: list[dict] = []
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.records = json.load(f)

    @classmethod
    def from_config(cls, config, backup_dir: str) -> Recovery:
        t = config.train
        return cls(backup_dir, t.recoveries, t.recovery_lr_factor, t.g_lr, t.d_lr)

    def learning_rates(self) -> dict:
        """Both learning rates after the recoveries so far."""
        scale = self.lr_factor ** len(self.records)
        return {name: lr * scale for name, lr in self.base.items()}

    def apply_learning_rates(self, model) -> None:
        """Sets both optimizers' learning rates; after a restore, which loads the saved ones."""
        rates = self.learning_rates()
        model.g_optimizer.learning_rate = rates["g_lr"]
        model.d_optimizer.learning_rate = rates["d_lr"]

    @property
    def exhausted(self) -> bool:
        return len(self.records) >= self.limit

    def save_start(self, model, initial_epoch: int) -> None:
        """Backs up the starting state when there is no backup yet, so a divergence in the first
        epoch can roll back too (not needed, so not written, when no recovery is allowed)."""
        path = cb.backup_path(self.backup_dir)
        if self.limit > 0 and initial_epoch == 0 and not os.path.exists(path):
            cb.write_backup(model, path, 0)

    def roll_back(self, model, guard) -> int:
        """Restores the last good epoch into `model`, lowers both learning rates, records the
        recovery and returns the number of completed epochs to resume from."""
        cause = guard.diverged
        completed = cb.restore_backup(model, self.backup_dir)
        self.records.append({"cause": cause, "resumed_after_epoch": completed})
        rates = self.learning_rates()  # with this recovery counted
        self.records[-1].update(rates)
        write_json_atomic(self.path, self.records)
        self.apply_learning_rates(model)
        guard.forget_after(completed)
        guard.reset()
        logging.warning(
            "Recovery %d of %d: %s. Rolled back to the end of epoch %d and lowered the learning "
            "rates to g_lr=%.3g, d_lr=%.3g (x%g, config.train.recovery_lr_factor).",
            len(self.records),
            self.limit,
            cause,
            completed,
            rates["g_lr"],
            rates["d_lr"],
            self.lr_factor,
        )
        return completed
