"""A training run killed with SIGKILL resumes from its last completed epoch: no epoch lost, none
repeated, both optimizers restored, and the final metrics are sane."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import mhp_keras
from mhp_keras.callbacks import EPOCH_ATTR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 40
ARGS = [
    "--config.data.max_train=64",
    "--config.data.batch_size=16",
    "--config.model.hypotheses=2",
    "--config.model.latent_dim=4",
    "--config.model.base_filters=8",
    "--config.model.disc_base_filters=8",
    f"--config.train.epochs={EPOCHS}",
    "--config.train.verbose=0",
    "--config.eval.report=False",
]


def _backup_epoch(path):
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs[EPOCH_ATTR])
    except (OSError, KeyError):
        return None


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    workdir = tmp_path / "run"
    command = [sys.executable, os.path.join(ROOT, "train_main.py"), f"--workdir={workdir}", *ARGS]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    backup = workdir / "backup" / "latest.weights.h5"
    first = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline and first.poll() is None:
            epoch = _backup_epoch(backup) if backup.exists() else None
            if epoch is not None and epoch >= 2:
                break
            time.sleep(0.02)
        assert first.poll() is None, "training ended before it could be killed"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    saved_epoch = _backup_epoch(backup)  # what survived the kill
    assert saved_epoch is not None and 2 <= saved_epoch < EPOCHS
    assert not (workdir / "metrics.json").exists()

    second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    metrics = json.loads((workdir / "metrics.json").read_text())
    # Resumed exactly after the last completed epoch: none lost, none repeated.
    assert metrics["epochs"]["first"] == saved_epoch
    assert metrics["epochs"]["first"] + metrics["epochs"]["run"] == EPOCHS
    assert np.isfinite(metrics["image_auroc"]) and metrics["image_auroc"] > 0.6
    # Both optimizers continued counting from the backup: one update each per batch of every epoch.
    steps_per_epoch = int(np.ceil(metrics["n_train"] / 16))
    model = mhp_keras.load_model(str(workdir / "model.keras"))
    assert int(model.g_optimizer.iterations.numpy()) == EPOCHS * steps_per_epoch
    assert int(model.d_optimizer.iterations.numpy()) == EPOCHS * steps_per_epoch
