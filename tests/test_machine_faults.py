"""Faults of the machine and the file system, made for real: a full disk during training (a small
tmpfs), Ctrl-C, a truncated resume backup and a truncated model.keras. Each ends in one `error:`
paragraph (or the interrupt line) without a traceback, with the documented exit status, and
leaves what was good on disk."""

import os
import shutil
import signal
import subprocess
import tempfile
import time

import h5py
import pytest
from cli_helpers import ENV, ROOT, run, tiny_flags, train_main_command

from mhp_keras.training.callbacks import EPOCH_ATTR


def _no_temporaries(folder):
    return [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if ".tmp-" in f]


@pytest.fixture
def small_disk():
    """A 700 KiB tmpfs: room for the tiny model's first checkpoint and backup, not the next."""
    mount_point = tempfile.mkdtemp(prefix="mhp-small-disk-")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", mount_point], capture_output=True
    )
    if mounted.returncode != 0:
        os.rmdir(mount_point)
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    yield mount_point
    subprocess.run(["umount", mount_point], check=False)
    os.rmdir(mount_point)


@pytest.mark.slow
def test_a_full_disk_stops_training_clearly_and_the_next_run_resumes(small_disk):
    workdir = os.path.join(small_disk, "run")
    command = train_main_command(f"--workdir={workdir}", *tiny_flags(epochs=30))
    full = run(command)
    assert full.returncode == 2, full.stderr[-3000:]
    assert "Traceback" not in full.stderr and "Segmentation" not in full.stderr
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith("error: no space left on the device of ")
    assert "run the same command again" in error
    backup = os.path.join(workdir, "backup", "latest.weights.h5")
    with h5py.File(backup, "r") as f:  # the last good backup is whole
        saved = int(f.attrs[EPOCH_ATTR])
    assert 1 <= saved < 30
    assert _no_temporaries(workdir) == [] and not os.path.exists(os.path.join(workdir, ".lock"))
    # Space is freed: the same command resumes after the last completed epoch.
    subprocess.run(["mount", "-o", "remount,size=4M", small_disk], check=True)
    resumed = run(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "RESULT image_auroc=" in resumed.stdout


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    workdir = tmp_path / "run"
    command = train_main_command(f"--workdir={workdir}", *tiny_flags(epochs=2000))
    proc = subprocess.Popen(
        command,
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background jobs with SIGINT ignored, and a child
        # inherits that (Python then installs no KeyboardInterrupt handler): give the run the
        # default disposition that a terminal's Ctrl-C meets.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 300
        history = workdir / "history.csv"  # created empty at the start, a row per epoch
        while time.time() < deadline and not (history.exists() and history.read_text()):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted (Ctrl-C).")
    assert not (workdir / ".lock").exists()  # released on the way out


def _trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained") / "run"
    result = run(train_main_command(f"--workdir={workdir}", *tiny_flags(epochs=2)))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _trained(tmp_path_factory)


def _truncate(path, keep=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * keep))


@pytest.mark.slow
def test_a_truncated_resume_backup_names_the_file(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    backup = workdir / "backup" / "latest.weights.h5"
    _truncate(backup)
    result = run(train_main_command(f"--workdir={workdir}", *tiny_flags(epochs=3)))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: the resume backup {backup} cannot be read")
    assert "Delete it" in error and "--overwrite" in error
    assert os.path.getsize(backup) > 0  # nothing destroyed


@pytest.mark.slow
def test_a_truncated_model_names_the_file(trained, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained, workdir)
    model = workdir / "model.keras"
    _truncate(model)
    for mode in ("export", "evaluate"):
        result = run(
            train_main_command(f"--workdir={workdir}", *tiny_flags(epochs=2), f"--mode={mode}")
        )
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        error = result.stderr.strip().splitlines()[-1]
        assert error.startswith(f"error: {model} is not a complete .keras model file")
    assert sorted(os.listdir(workdir / "export" / "conad")) == ["1"]  # no new version


def test_load_model_names_a_truncated_file(tmp_path):
    import mhp_keras

    path = tmp_path / "model.keras"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ValueError, match="is not a complete .keras model file"):
        mhp_keras.load_model(str(path))
