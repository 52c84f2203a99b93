"""One run per workdir at a time: a lock file that names its owner, and a stale lock taken over.

Two training commands on one `--workdir` (a double click, a retried job) used to both run:
`history.csv` got every epoch twice and one run died at export because the other took version 1.
So every command that writes a workdir holds `<workdir>/.lock` while it runs. The file records the
owner's PID, host, process start time and command line; a second command is refused with that
owner named. A lock whose process is gone (a SIGKILL, a power cut) is stale: the next command
takes it over and says so. The process start time (Linux `/proc/<pid>/stat`) tells a live owner
from an unrelated process that was later given the same PID.

A lock written on another host cannot be checked from here, so it is never taken over
automatically; the message says which file to delete once that run is known to be gone.
Multi-worker runs share one workdir by design: only the chief takes the lock (see
`mhp_keras.training.distribute.writes_run_files`).

The lock is created by hard-linking a complete temporary file into place, so it appears whole
or not at all and two processes can never both create it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time

from absl import logging

from mhp_keras.errors import UserError
from mhp_keras.io_utils import process_alive

LOCK_NAME = ".lock"


class WorkdirBusy(UserError):
    """Another live process holds the workdir's lock."""


def process_start_time(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def _alive(owner: dict) -> bool:
    """Whether the process that wrote `owner` (on this host) still runs."""
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0 or not process_alive(pid):
        return False
    started = owner.get("start_time")
    return started is None or process_start_time(pid) in (None, started)


def _read(path: str) -> dict | None:
    """The lock's owner record; None if the lock is gone, {} if it cannot be read as one."""
    try:
        with open(path, encoding="utf-8") as f:
            owner = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def describe(owner: dict) -> str:
    if not owner:
        return "an unreadable lock"
    started = owner.get("started", "?")
    return (
        f"process {owner.get('pid', '?')} on {owner.get('host', '?')} (started {started}: "
        f"{owner.get('command', '?')})"
    )


def _own_record(purpose: str) -> dict:
    pid = os.getpid()
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "start_time": process_start_time(pid),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])[:300],
        "purpose": purpose,
    }


def _create(path: str, record: dict) -> bool:
    """Creates the lock with `record` in one step; False if a lock already exists."""
    tmp = f"{path}.{record['pid']}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def acquire(workdir: str, purpose: str = "run") -> dict:
    """Takes `<workdir>/.lock` for this process; raises WorkdirBusy if a live process holds it.

    Returns this process's owner record (pass it to `release`).
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_NAME)
    record = _own_record(purpose)
    for _ in range(3):
        if _create(path, record):
            return record
        owner = _read(path)
        if owner is None:
            continue  # released between our attempt and the read: try again
        if owner.get("pid") == record["pid"] and owner.get("host") == record["host"]:
            return owner  # this process already holds it (a nested call)
        if owner and owner.get("host") != record["host"]:
            raise WorkdirBusy(
                f"--workdir={workdir} is in use by {describe(owner)}. Wait for that run to end, "
                f"or use another --workdir; if that run is gone, delete {path}."
            )
        if owner and _alive(owner):
            raise WorkdirBusy(
                f"--workdir={workdir} is in use by {describe(owner)}: one run per workdir at a "
                "time. Wait for it to end, stop it, or use another --workdir."
            )
        # Stale: the owner is gone. Re-read just before removing, so a lock that another process
        # has meanwhile taken over is never removed.
        if _read(path) == owner:
            logging.warning(
                "Taking over the stale lock %s of %s, which is no longer running.",
                path,
                describe(owner),
            )
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    raise WorkdirBusy(f"--workdir={workdir}: could not take its lock {path}; try again.")


def release(workdir: str, record: dict) -> None:
    """Removes the lock if this process still holds it."""
    path = os.path.join(workdir, LOCK_NAME)
    owner = _read(path)
    if owner and owner.get("pid") == record["pid"] and owner.get("host") == record["host"]:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def workdir_lock(workdir: str, purpose: str = "run", enabled: bool = True):
    """Holds the workdir's lock for the `with` block (`enabled=False`: a no-op, for the
    non-chief workers of a multi-worker run, which share the chief's workdir)."""
    if not enabled:
        yield None
        return
    path = os.path.join(workdir, LOCK_NAME)
    nested = (_read(path) or {}).get("pid") == os.getpid()
    record = acquire(workdir, purpose)
    try:
        yield record
    finally:
        if not nested:
            release(workdir, record)
