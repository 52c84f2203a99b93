"""The XLA calibrations that the runs of one study share: one per step cost, not one per run.

An ablation's variants x classes x seeds have a handful of distinct step costs; within
`shared_choices` (the ablation and class-table modes) the first run of each cost (`cost_key`)
stores its timings here and every later run of that cost reuses them, decided again for its own
length by `mhp_keras.training.jit`.
"""

from __future__ import annotations

import contextlib
import json

from absl import logging

from mhp_keras.hardware import cpu_model_name
from mhp_keras.io_utils import write_json_atomic

SHARED_FILE = "jit_choices.json"  # shared_choices' file, in the study's workdir


def read_json(path: str):
    """The JSON in `path`; None if there is none, or (logged) if it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logging.warning("Ignoring unreadable %s (%s); calibrating again.", path, exc)
        return None


_shared_path: str | None = None  # set by `shared_choices`


@contextlib.contextmanager
def shared_choices(path: str):
    """Within: a calibration is stored in `path` under its `cost_key` and reused, re-decided for
    each run's length, by every later run of the same step cost (an ablation's variants x
    classes x seeds calibrate once per shape, not once per run)."""
    global _shared_path
    previous, _shared_path = _shared_path, path
    try:
        yield
    finally:
        _shared_path = previous


def cost_key(config) -> str:
    """What sets a step's cost, not the step count: the machine, the batch's shape, the networks,
    the losses that add work (a discriminator above all) and the precision."""
    data, loss = config.data, config.loss
    key = {
        "cpu": cpu_model_name(),
        "batch": [data.batch_size, data.image_size, data.image_size, data.channels],
        "model": config.model.to_dict(),
        "adversarial": float(loss.adv_weight) > 0,
        "losses": [
            loss.wta,
            loss.adv_hypotheses,
            loss.adv_sources,
            float(config.train.clip_norm) > 0,
        ],
        "mixed_precision": config.train.mixed_precision,
    }
    return json.dumps(key, sort_keys=True)


def lookup(key: str):
    """The calibration stored for step cost `key` (None outside `shared_choices` or if none)."""
    return (read_json(_shared_path) or {}).get(key) if _shared_path else None


def store(key: str, record: dict) -> None:
    if _shared_path:
        shared = read_json(_shared_path)
        write_json_atomic(
            _shared_path, {**(shared if isinstance(shared, dict) else {}), key: record}
        )
