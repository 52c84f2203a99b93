"""What a run's history.csv says about the whole run, whichever processes trained it.

A resumed run trains its remaining epochs in a new process, and a finished run that is resumed
(a study reusing its workdir) trains none: the callbacks of the last process then know nothing of
the earlier epochs. history.csv is appended by every process and skips rolled-back epochs, so the
run's last mechanism diagnostics and its whole training time are read from it.
"""

from __future__ import annotations

import csv
import math
import os

from absl import logging

from mhp_keras.io_utils import write_text_atomic
from mhp_keras.training.diagnostics import MechanismDiagnostics, effective_heads, head_shares


def history_rows(workdir: str) -> list[dict]:
    """history.csv's epochs (every process's, as the resumed logger appends), values as floats
    (None where a column is empty or not a number); [] without the file."""
    try:
        with open(os.path.join(workdir, "history.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []

    def number(text):
        try:
            value = float(text)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    return [{k: number(v) for k, v in row.items() if k is not None} for row in rows]


def keep_epochs_before(workdir: str, initial_epoch: int) -> int:
    """Drops history.csv's rows of epochs >= `initial_epoch`, the ones the run is about to train
    (again), and returns how many were dropped.

    The model resumes from its backup, and the history must describe that model's epochs only:
    a run whose backup is gone (a workdir restored from records without checkpoints, a deleted
    backup/ folder) starts again at epoch 0, and its logger would otherwise append a second
    epoch 0 after the old last one. The file is rewritten atomically, lines kept verbatim.
    """
    path = os.path.join(workdir, "history.csv")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = f.read().splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return 0
    if not lines:
        return 0
    header = next(csv.reader([lines[0]]))
    if "epoch" not in header:
        return 0
    column = header.index("epoch")

    def kept(line: str) -> bool:
        fields = next(csv.reader([line]), [])
        try:
            return int(float(fields[column])) < initial_epoch
        except (IndexError, ValueError):
            return False

    body = [line for line in lines[1:] if kept(line)]
    dropped = len(lines) - 1 - len(body)
    if not body:
        # No epoch left: the logger writes a new header (this code's columns) with the first row.
        os.remove(path)
    elif dropped:
        write_text_atomic(path, "".join([lines[0], *body]))
    if dropped:
        logging.warning(
            "%s: dropped the rows of epochs from %d on, which are trained again now (the resume "
            "backup holds %d epochs).",
            path,
            initial_epoch + 1,
            initial_epoch,
        )
    return dropped


def mechanism(callbacks, rows: list[dict]) -> dict | None:
    """The last epoch's mechanism diagnostics (adv_grad_share, head_diversity, sharpness,
    head_sharpness_max where logged, and effective_heads): from history.csv, which has every
    epoch even when this process resumed a finished run, else from this process's callback.
    effective_heads is derived from the row's winner shares, so runs logged before it existed
    have it too."""
    names = ("adv_grad_share", "head_diversity", "sharpness")
    measured = [r for r in rows if all(r.get(n) is not None for n in names)]
    if measured:
        last = {n: measured[-1][n] for n in names}
        if measured[-1].get("head_sharpness_max") is not None:  # logged since 2026-12-05
            last["head_sharpness_max"] = measured[-1]["head_sharpness_max"]
        used = effective_heads(head_shares(measured[-1]))
        if used is not None:
            last["effective_heads"] = used
        return last | {"epochs_measured": len(measured)}
    found = [c for c in callbacks if isinstance(c, MechanismDiagnostics) and c.history]
    return dict(found[0].history[-1], epochs_measured=len(found[0].history)) if found else None


def all_epochs_seconds(rows: list[dict]) -> float | None:
    """The training time of every epoch in history.csv, resumed processes included, or None
    when an epoch lacks `epoch_seconds` (logged before it existed)."""
    seconds = [r.get("epoch_seconds") for r in rows]
    return float(sum(seconds)) if seconds and None not in seconds else None
