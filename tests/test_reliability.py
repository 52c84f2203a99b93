"""Nothing lost, clear errors: divergence keeps the last good checkpoint, saves are atomic, a
workdir refuses a different config, and two runs with one seed give identical metrics."""

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest
from cli_helpers import ENV, ROOT, tiny_flags, train_main_command
from model_helpers import tiny_conad

from mhp_keras.errors import UserError
from mhp_keras.io_utils import atomic_path, write_json_atomic
from mhp_keras.models import ConAD
from mhp_keras.training import callbacks as cb
from mhp_keras.training.experiment import prepare_workdir, save_model


def tiny_model():
    return tiny_conad()


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_divergence_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = tiny_model()
    good = np.random.default_rng(0).random((16, 16, 16, 1)).astype("float32")
    path = str(tmp_path / "last.keras")
    checkpoint = cb.AtomicModelCheckpoint(path)
    backup = cb.EpochBackup(str(tmp_path / "backup"))
    model.fit(good, epochs=1, batch_size=8, verbose=0, callbacks=[checkpoint, backup])
    kept, kept_backup = digest(path), digest(tmp_path / "backup" / "latest.weights.h5")
    bad = good.copy()
    bad[9:] = np.nan  # the second batch poisons the loss
    guard = cb.DivergenceGuard()
    initial_epoch = cb.restore_backup(model, str(tmp_path / "backup"))
    assert initial_epoch == 1
    model.fit(
        bad,
        epochs=3,
        initial_epoch=initial_epoch,
        batch_size=8,
        verbose=0,
        shuffle=False,
        callbacks=[guard, checkpoint, backup],
    )
    assert guard.diverged is not None
    # The backup resumed this fit at epoch 2; its second batch holds the NaN images.
    assert "loss=nan" in guard.diverged and "epoch 2, step 2" in guard.diverged
    assert digest(path) == kept
    assert digest(tmp_path / "backup" / "latest.weights.h5") == kept_backup


def test_interrupted_save_leaves_the_previous_model_readable(tmp_path, monkeypatch):
    model = tiny_model()
    path = str(tmp_path / "model.keras")
    save_model(model, path)
    before = digest(path)

    def crash(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a zip file")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(ConAD, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(model, path)
    assert digest(path) == before
    assert os.listdir(tmp_path) == ["model.keras"]  # no temporary left behind


def test_atomic_json_and_directories(tmp_path):
    target = tmp_path / "metrics.json"
    write_json_atomic(str(target), {"auroc": float("nan"), "n": np.int64(3)})
    assert json.loads(target.read_text()) == {"auroc": None, "n": 3}
    folder = tmp_path / "export"
    with atomic_path(str(folder)) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "a"), "w").close()
    with pytest.raises(RuntimeError), atomic_path(str(folder)) as tmp:
        os.makedirs(tmp)
        raise RuntimeError
    assert os.listdir(folder) == ["a"] and sorted(os.listdir(tmp_path)) == [
        "export",
        "metrics.json",
    ]


def test_atomic_path_without_overwrite_never_replaces(tmp_path):
    folder = tmp_path / "1"
    with pytest.raises(FileExistsError), atomic_path(str(folder), overwrite=False) as tmp:
        os.makedirs(tmp)
        open(os.path.join(tmp, "new"), "w").close()
        os.makedirs(folder)  # another writer takes the name meanwhile
        open(folder / "theirs", "w").close()
    assert os.listdir(folder) == ["theirs"]
    assert os.listdir(tmp_path) == ["1"]  # the temporary is gone


def test_workdir_refuses_a_different_config(tiny_config, tmp_path):
    config = tiny_config()
    prepare_workdir(config, str(tmp_path), overwrite=False)
    (tmp_path / "model.keras").write_text("old model")
    config.train.epochs = 10  # more epochs: the same run, resumed
    prepare_workdir(config, str(tmp_path), overwrite=False)
    other = tiny_config(**{"model.hypotheses": 5})
    with pytest.raises(UserError, match=r"model.hypotheses: 2 -> 5.*--overwrite"):
        prepare_workdir(other, str(tmp_path), overwrite=False)
    assert (tmp_path / "model.keras").exists()
    prepare_workdir(other, str(tmp_path), overwrite=True)
    assert not (tmp_path / "model.keras").exists()
    assert json.loads((tmp_path / "config.json").read_text())["model"]["hypotheses"] == 5


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tmp_path):
    def run(name):
        workdir = tmp_path / name
        command = train_main_command(
            f"--workdir={workdir}",
            "--config.seed=7",
            "--config.train.deterministic=True",
            *tiny_flags(max_train=48),
        )
        result = subprocess.run(
            command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = json.loads((workdir / "metrics.json").read_text())
        metrics.pop("timings")
        metrics.pop("export")
        return metrics, (workdir / "scores.csv").read_text()

    first, second = run("a"), run("b")
    assert first == second
