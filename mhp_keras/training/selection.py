"""Which epoch's weights a run keeps: by default the one that fits held-out normal images best.

With a discriminator in the game the decoder keeps moving, and its validation NLL jumps from
epoch to epoch. Measured on CIFAR-10 dev, airplane normal, ConAD-2, 20 epochs: `val_recon` was
-2,300 nats at epoch 19 and -661 at epoch 20, the last, whose weights were scored: image AUROC
0.49, chance, where every other variant of that class reached 0.67-0.72
(docs/results.md#keeping-the-best-epoch). A plain VAE's validation NLL falls smoothly, and the last
epoch is then also the best.

`train.keep_weights=best_val` (the default) therefore saves the weights of every epoch whose
`val_recon`, the score itself on the held-out normal images (`data.val_fraction`), is the lowest
so far, and trains on; after the last epoch the model gets the best epoch's weights back before
it is calibrated, saved, scored and exported. No anomalous image is looked at, so the one-class
protocol holds. `last` keeps the last epoch's weights, as runs made before this setting did.

The best weights live beside the resume backup (`<backup>/best.weights.h5`, written atomically
with their epoch and value), so a killed and resumed run still knows its best epoch; a diverged
epoch (flagged by the guard) is never a candidate. Without validation images there is nothing to
select by, and the last epoch's weights are kept (logged).
"""

from __future__ import annotations

import math
import os

import h5py
import keras
from absl import logging

from mhp_keras.training import callbacks as cb

MONITOR = "val_recon"
BEST_FILE = "best.weights.h5"
VALUE_ATTR = "mhp_keras_val_recon"


def best_path(backup_dir: str) -> str:
    return os.path.join(backup_dir, BEST_FILE)


def stored_best(path: str) -> tuple[int, float] | None:
    """(epoch, val_recon) of the best weights saved at `path`, or None without a readable file."""
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs[cb.EPOCH_ATTR]), float(f.attrs[VALUE_ATTR])
    except (OSError, KeyError, ValueError):
        return None


class BestWeights(keras.callbacks.Callback):
    """Saves the weights of each epoch whose `val_recon` is the lowest so far (ties keep the
    earlier epoch), skipping epochs the guard flagged; `best` is (epoch, value) or None."""

    def __init__(self, backup_dir: str, guard: cb.DivergenceGuard | None = None):
        super().__init__()
        self.path = best_path(backup_dir)
        self.guard = guard
        self.best = stored_best(self.path)  # a resumed run's best so far

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(MONITOR)
        if cb.flagged(self.guard, logs) or value is None or not math.isfinite(float(value)):
            return
        if self.best is not None and float(value) >= self.best[1]:
            return
        cb.check_space(self.model, self.path, "the best epoch's weights")
        cb.write_backup(self.model, self.path, epoch + 1, {VALUE_ATTR: float(value)})
        self.best = (epoch + 1, float(value))


def keep_best(model, callbacks, rows: list[dict]) -> dict:
    """Loads the best epoch's weights into `model` when `callbacks` hold a BestWeights that saved
    any, and returns what was kept, for metrics.json: {"kept": "best_val" | "last", "epoch",
    "val_recon", "last_val_recon"}; `rows` is the run's history (the last epoch's value)."""
    callback = next((c for c in callbacks if isinstance(c, BestWeights)), None)
    if callback is None:
        return {"kept": "last"}
    last_value = rows[-1].get(MONITOR) if rows else None
    best = callback.best
    if best is None:
        logging.warning(
            "train.keep_weights=best_val: no epoch had a finite %s (no validation images?), so "
            "the last epoch's weights are kept.",
            MONITOR,
        )
        return {"kept": "last", "last_val_recon": last_value}
    model.load_weights(callback.path)
    epoch, value = best
    logging.info(
        "Keeping the weights of epoch %d (%s %.6g, the lowest; the last epoch's: %s), "
        "train.keep_weights=best_val.",
        epoch,
        MONITOR,
        value,
        "none" if last_value is None else f"{last_value:.6g}",
    )
    return {"kept": "best_val", "epoch": epoch, "val_recon": value, "last_val_recon": last_value}
