"""The workdir lock: a second live process is refused with the owner named, a stale lock (its
process gone, or its PID reused by another process) is taken over, and a lock from another host is
never taken over silently. The competing owners are real processes."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from mhp_keras.training import workdir_lock as wl


def _lock(workdir):
    return os.path.join(workdir, wl.LOCK_NAME)


def _owner(workdir):
    with open(_lock(workdir), encoding="utf-8") as f:
        return json.load(f)


def _write_lock(workdir, **record):
    os.makedirs(workdir, exist_ok=True)
    with open(_lock(workdir), "w", encoding="utf-8") as f:
        json.dump(record, f)


def test_the_lock_names_this_process_and_is_released(tmp_path):
    workdir = str(tmp_path / "run")
    with wl.workdir_lock(workdir, "train") as record:
        stored = _owner(workdir)
        assert stored == record
        assert stored["pid"] == os.getpid() and stored["host"] == socket.gethostname()
        assert stored["start_time"] == wl.process_start_time(os.getpid())
        # A nested use by the same process neither fails nor releases the outer lock.
        with wl.workdir_lock(workdir, "export"):
            pass
        assert os.path.exists(_lock(workdir))
    assert not os.path.exists(_lock(workdir))
    assert os.listdir(workdir) == []  # no temporary file left behind


def test_a_live_process_holding_the_lock_refuses_a_second(tmp_path):
    workdir = str(tmp_path / "run")
    holder = textwrap.dedent(
        f"""
        import sys, time
        from mhp_keras.training import workdir_lock as wl
        with wl.workdir_lock({workdir!r}, "train"):
            print("locked", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(wl.WorkdirBusy) as raised:
            wl.acquire(workdir)
        message = str(raised.value)
        assert f"process {proc.pid} on {socket.gethostname()}" in message
        assert f"--workdir={workdir}" in message and "one run per workdir" in message
        assert _owner(workdir)["pid"] == proc.pid  # left untouched
    finally:
        proc.kill()
        proc.wait()
    # Killed, the holder left its lock behind: the next run takes it over.
    record = wl.acquire(workdir)
    assert _owner(workdir)["pid"] == os.getpid()
    wl.release(workdir, record)


def test_a_stale_lock_is_taken_over_with_a_message(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    workdir = str(tmp_path / "run")
    _write_lock(workdir, pid=gone.pid, host=socket.gethostname(), command="train_main.py")
    with caplog.at_level("WARNING"), wl.workdir_lock(workdir):
        assert _owner(workdir)["pid"] == os.getpid()
    assert any(
        "stale lock" in r.getMessage() and str(gone.pid) in r.getMessage() for r in caplog.records
    )


def test_a_reused_pid_is_not_mistaken_for_the_owner(tmp_path):
    # The parent process is alive, but it started at another time than the lock's owner did.
    parent = os.getppid()
    started = wl.process_start_time(parent)
    if started is None:
        pytest.skip("no /proc/<pid>/stat here to tell process start times")
    workdir = str(tmp_path / "run")
    _write_lock(workdir, pid=parent, host=socket.gethostname(), start_time=started + 1)
    record = wl.acquire(workdir)
    assert record["pid"] == os.getpid()
    wl.release(workdir, record)
    # The same PID with its real start time is a live owner.
    _write_lock(workdir, pid=parent, host=socket.gethostname(), start_time=started)
    with pytest.raises(wl.WorkdirBusy, match=f"process {parent} "):
        wl.acquire(workdir)


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    workdir = str(tmp_path / "run")
    _write_lock(workdir, pid=1, host="other-host.example", started="2026-01-01 00:00:00")
    with pytest.raises(wl.WorkdirBusy) as raised:
        wl.acquire(workdir)
    assert "other-host.example" in str(raised.value)
    assert f"delete {_lock(workdir)}" in str(raised.value)
    assert os.path.exists(_lock(workdir))


def test_release_leaves_another_owners_lock_alone(tmp_path):
    workdir = str(tmp_path / "run")
    record = wl.acquire(workdir)
    _write_lock(workdir, pid=record["pid"] + 1, host=record["host"])
    wl.release(workdir, record)
    assert os.path.exists(_lock(workdir))


def test_disabled_lock_writes_nothing(tmp_path):
    workdir = str(tmp_path / "run")
    with wl.workdir_lock(workdir, enabled=False) as record:
        assert record is None
        time.sleep(0)
    assert not os.path.exists(workdir)
