"""A training run killed with SIGKILL resumes from its last completed epoch: no epoch lost, none
repeated, both optimizers restored, and the final metrics are sane."""

import json
import signal
import subprocess
import time

import h5py
import numpy as np
import pytest
from cli_helpers import ENV, ROOT, tiny_flags, train_main_command

import mhp_keras
from mhp_keras.training.callbacks import EPOCH_ATTR

EPOCHS = 40
ARGS = ["--config.data.batch_size=16", *tiny_flags(epochs=EPOCHS)]


def _backup_epoch(path):
    try:
        with h5py.File(path, "r") as f:
            return int(f.attrs[EPOCH_ATTR])
    except (OSError, KeyError):
        return None


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path):
    workdir = tmp_path / "run"
    command = train_main_command(f"--workdir={workdir}", *ARGS)
    backup = workdir / "backup" / "latest.weights.h5"
    first = subprocess.Popen(
        command, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
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

    second = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    # The killed run's workdir lock was stale: taken over, with a message, and released at the end.
    assert f"stale lock {workdir / '.lock'}" in second.stderr
    assert not (workdir / ".lock").exists()
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
