"""Two training commands on one workdir: the second is refused at once, naming the first, and the
first's files are left as they are (the fault of a double click or a retried job, for real)."""

import os
import subprocess
import time

import pytest
from cli_helpers import ENV, ROOT, run, tiny_flags, train_main_command


def _rows(path):
    return path.read_text().count("\n") >= 2 if path.exists() else False


@pytest.mark.slow
def test_a_second_run_on_a_busy_workdir_is_refused(tmp_path):
    workdir = tmp_path / "run"
    command = train_main_command(f"--workdir={workdir}", *tiny_flags(epochs=2000))
    first = subprocess.Popen(
        command, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        history = workdir / "history.csv"
        deadline = time.time() + 300
        # Until the first epoch's row is in (CSVLogger creates the file empty at the start).
        while time.time() < deadline and first.poll() is None and not _rows(history):
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second started"
        second = run(command)
        assert first.poll() is None
        assert second.returncode == 2, second.stderr[-2000:]
        assert "Traceback" not in second.stderr
        error = second.stderr.strip().splitlines()[-1]
        assert error.startswith("error: ") and f"process {first.pid} on " in error
        assert "one run per workdir" in error
    finally:
        first.kill()
        first.wait()
    # The second run wrote nothing: one header in the first run's history.
    lines = history.read_text().splitlines()
    assert sum(line.startswith("epoch") for line in lines) == 1
    assert not os.path.exists(workdir / "export")
