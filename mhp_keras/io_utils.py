"""Atomic file and directory writes: write to a temporary sibling, then rename into place.

A rename within one filesystem is atomic, so a crash or kill at any moment leaves either the old
good file or the new complete one, never a half-written file under the real name. What a kill
does leave is the hidden temporary; its name carries the writer's PID, so the next writer in that
folder removes the temporaries of writers that are gone (`remove_stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile

from absl import logging


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "", *, overwrite: bool = True):
    """Yields a temporary path beside `path`; on success renames it over `path`.

    Works for files and for directories (a directory target is replaced whole). The temporary's
    name starts with a dot, so watchers of the folder (TF Serving's version scan) ignore it. With
    `overwrite=False` an existing `path` is never replaced: FileExistsError instead. On an
    exception the temporary is removed and `path` is left as it was.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    handle, tmp = tempfile.mkstemp(
        prefix=temporary_prefix(os.path.basename(path)), suffix=suffix, dir=parent
    )
    os.close(handle)
    os.remove(tmp)  # the writer creates it (some writers refuse an existing file)
    try:
        yield tmp
        if not overwrite:
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, "already exists", path)
            os.rename(tmp, path)  # also fails if a non-empty directory appeared meanwhile
        elif os.path.isdir(tmp) and os.path.isdir(path):
            # Directories cannot be renamed over a non-empty one: move the old aside first.
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


# errno values that mean "this device cannot take the write" (full, over quota, read-only).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
# Room kept beyond a file's own size: its container's overhead and the small files around it.
SPACE_MARGIN = 64 * 1024


def ensure_free_space(path: str, needed: int, what: str, then: str) -> None:
    """Raises DiskFull before writing `needed` bytes to `path` when its device has less room.

    Some writers cannot fail cleanly on a full device: h5py, inside Keras' weight saving,
    segfaults when a write returns ENOSPC. So their space is checked before they start. `what`
    names the file for the message, `then` says what happens next and what to do.
    """
    from mhp_keras.errors import DiskFull

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise DiskFull(
            f"no space left on the device of {parent} for {what} {path} (about "
            f"{_size(needed)} needed, {_size(free)} free). {then}"
        )


def needed_bytes(path: str, estimate: int) -> int:
    """The room to keep for rewriting `path`: its current size or `estimate`, whichever is
    larger, plus SPACE_MARGIN (the new file is written beside the old one)."""
    size = os.path.getsize(path) if os.path.isfile(path) else 0
    return int(max(size, estimate) * 1.05) + SPACE_MARGIN


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def temporary_prefix(name: str) -> str:
    """The hidden name prefix of this process's temporaries for `name`: `.<name>.tmp-<pid>-`."""
    return f".{name}.tmp-{os.getpid()}-"


# A temporary of atomic_path (`.<name>.tmp-<pid>-<random>`), or another hidden scratch folder
# named `.<kind>-<pid>-<random>` (mhp-predict's `.maps-`); before the PID was added the names had
# none (`.<name>.tmp-<random>`).
_TEMPORARY = re.compile(r"^\.(?P<name>.+?)(\.tmp)?-(?:(?P<pid>\d+)-)?[^-]+$")


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (owned by any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str, kinds: tuple[str, ...] = ()) -> tuple[list, list]:
    """Removes the hidden temporaries in `folder` whose writing process is gone.

    A temporary counts if its name is `.<target>.tmp-<pid>-…` (atomic_path) or `.<kind>-<pid>-…`
    for a scratch `kind` in `kinds`. Those of live processes (a concurrent writer) are kept;
    those without a PID (written by an older release) cannot be told apart from a live writer's,
    so they are only reported. Returns (removed paths, reported paths).
    """
    removed, reported = [], []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed, reported
    for name in sorted(names):
        match = _TEMPORARY.match(name)
        if not match or not (match.group(2) or match.group("name") in kinds):
            continue
        path = os.path.join(folder, name)
        pid = match.group("pid")
        if pid is None:
            reported.append(path)
        elif not process_alive(int(pid)):
            target = os.path.join(folder, match.group("name"))
            if name.endswith(".old") and not os.path.lexists(target):
                # Killed between moving the old version aside and moving the new one in (see
                # atomic_path): the old version is the last whole one; put it back.
                os.rename(path, target)
                logging.warning("Restored %s from %s, left by a killed writer.", target, path)
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            removed.append(path)
    return removed, reported


def write_text_atomic(path: str, text: str) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str, payload) -> None:
    """Strict JSON (NaN and infinities become null, which every JSON parser accepts)."""
    text = json.dumps(
        _finite(payload), indent=2, sort_keys=True, default=_jsonable, allow_nan=False
    )
    write_text_atomic(path, text + "\n")


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _finite(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _jsonable(value):
    """numpy scalars and arrays to plain Python for json."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
