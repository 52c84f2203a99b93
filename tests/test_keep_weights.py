"""`train.keep_weights`: a run keeps the weights of its lowest validation NLL epoch, across resumes,
never a diverged epoch's; `last` keeps the last epoch's."""

import csv
import json

import numpy as np
import pytest
from model_helpers import tiny_conad

from mhp_keras.config import legacy
from mhp_keras.config.defaults import base_config
from mhp_keras.config.validation import validate_config
from mhp_keras.errors import ConfigError
from mhp_keras.training import callbacks as cb
from mhp_keras.training import selection
from mhp_keras.training.experiment import config_dict


def _shifted(model, amount):
    """Moves every trainable weight by `amount`, so each epoch's weights are told apart."""
    for w in model.trainable_weights:
        w.assign(w.numpy() + amount)


def _first_weight(model):
    return model.trainable_weights[0].numpy().copy()


def test_the_lowest_finite_unflagged_epoch_is_saved_and_restored(tmp_path):
    model = tiny_conad(seed=0)
    model.build((None, 16, 16, 1))
    guard = cb.DivergenceGuard()
    callback = selection.BestWeights(str(tmp_path), guard)
    callback.set_model(model)
    kept = {}
    for epoch, value in enumerate([5.0, 7.0, 3.0, 3.0, float("nan"), 4.0]):
        _shifted(model, 1.0)
        kept[epoch] = _first_weight(model)
        callback.on_epoch_end(epoch, {"loss": 1.0, selection.MONITOR: value})
    # Epoch 3 (index 2) is the lowest; the tie at index 3 keeps the earlier epoch; NaN is no
    # candidate.
    assert callback.best == (3, 3.0)
    # A flagged (diverged) epoch is never saved, however low its value.
    guard.diverged = "training diverged: loss=nan"
    callback.on_epoch_end(6, {"loss": float("nan"), selection.MONITOR: -100.0})
    assert callback.best == (3, 3.0)

    info = selection.keep_best(model, [guard, callback], [{selection.MONITOR: 4.0}])
    assert info == {"kept": "best_val", "epoch": 3, "val_recon": 3.0, "last_val_recon": 4.0}
    np.testing.assert_array_equal(_first_weight(model), kept[2])
    # A resumed run (a new callback on the same backup folder) knows its best so far.
    assert selection.BestWeights(str(tmp_path)).best == (3, 3.0)


def test_without_a_validation_value_or_callback_the_last_weights_stay(tmp_path):
    model = tiny_conad(seed=0)
    model.build((None, 16, 16, 1))
    callback = selection.BestWeights(str(tmp_path))
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 1.0})  # no validation images: no val_recon
    before = _first_weight(model)
    assert selection.keep_best(model, [callback], []) == {"kept": "last", "last_val_recon": None}
    assert selection.keep_best(model, [], [{selection.MONITOR: 2.0}]) == {"kept": "last"}
    np.testing.assert_array_equal(_first_weight(model), before)
    assert selection.stored_best(str(tmp_path / "missing.weights.h5")) is None


def test_a_run_scores_and_saves_its_best_epoch(tmp_path, tiny_config, monkeypatch):
    import mhp_keras
    from mhp_keras.training.experiment import run

    # A validation NLL that is lowest at epoch 2 of 4, as an adversarial run's jumps make it.
    planted = [-1.0, -5.0, -2.0, -3.0]
    original = selection.BestWeights.on_epoch_end

    def planted_values(self, epoch, logs=None):
        original(self, epoch, dict(logs, **{selection.MONITOR: planted[epoch]}))

    monkeypatch.setattr(selection.BestWeights, "on_epoch_end", planted_values)
    config = tiny_config(**{"train.epochs": 4, "train.jit_compile": "false"})
    metrics = run(config, str(tmp_path), "train_and_evaluate")
    with open(tmp_path / "history.csv", encoding="utf-8") as f:
        last = float(list(csv.DictReader(f))[-1]["val_recon"])
    assert metrics["weights"] == {
        "kept": "best_val",
        "epoch": 2,
        "val_recon": -5.0,
        "last_val_recon": pytest.approx(last, rel=1e-6),
    }
    assert json.loads((tmp_path / "metrics.json").read_text())["weights"]["epoch"] == 2

    # The saved model holds epoch 2's weights, not the last epoch's (the resume backup's).
    def weights_of(path):
        model = tiny_conad(seed=1)
        model.build((None, 16, 16, 1))
        model.load_weights(str(path))
        return [w.numpy() for w in model.trainable_weights]

    saved = [
        w.numpy() for w in mhp_keras.load_model(str(tmp_path / "model.keras")).trainable_weights
    ]
    best = weights_of(tmp_path / "backup" / selection.BEST_FILE)
    latest = weights_of(tmp_path / "backup" / cb.BACKUP_FILE)
    for a, b in zip(saved, best, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(saved, latest, strict=True))


def test_the_setting_is_checked_and_older_runs_kept_the_last_epoch():
    config = base_config()
    assert config.train.keep_weights == "best_val"
    config.train.keep_weights = "best"
    with pytest.raises(ConfigError, match=r"train\.keep_weights='best'.*best_val"):
        validate_config(config)
    now = config_dict(base_config())
    before = json.loads(json.dumps(now))
    del before["train"]["keep_weights"]
    assert legacy.changed_keys(before, now) == ["train.keep_weights"]
    last = json.loads(json.dumps(now))
    last["train"]["keep_weights"] = "last"
    assert legacy.changed_keys(before, last) == []
