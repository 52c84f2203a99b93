"""Hidden temporaries left by a killed writer are removed by the next one; a live writer's are
kept, and nameless old ones are reported. The killed writer is a real process, killed with
SIGKILL in the middle of its atomic write."""

import os
import signal
import subprocess
import sys
import textwrap

from mhp_keras import io_utils


def _killed_writer(target: str) -> str:
    """Starts a process that begins an atomic directory write of `target`, SIGKILLs it there, and
    returns the temporary it left behind."""
    code = textwrap.dedent(
        f"""
        import os, time
        from mhp_keras.io_utils import atomic_path
        with atomic_path({target!r}) as tmp:
            os.makedirs(os.path.join(tmp, "variables"))
            print(tmp, flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert os.path.isdir(tmp)
    assert os.path.basename(tmp).startswith(f".1.tmp-{proc.pid}-")
    return tmp


def test_a_killed_writers_temporary_is_removed(tmp_path):
    tmp = _killed_writer(str(tmp_path / "1"))
    removed, reported = io_utils.remove_stale_temporaries(str(tmp_path))
    assert removed == [tmp] and reported == []
    assert os.listdir(tmp_path) == []


def test_live_writers_and_other_files_are_kept(tmp_path):
    folder = str(tmp_path)
    with io_utils.atomic_path(os.path.join(folder, "2")) as live:
        os.makedirs(live)
        (tmp_path / "1").mkdir()  # a finished version
        (tmp_path / ".hidden-notes").write_text("user file")
        (tmp_path / ".maps-x").mkdir()  # an older release's scratch: no PID to check
        removed, reported = io_utils.remove_stale_temporaries(folder, kinds=("maps",))
        assert removed == [] and reported == [str(tmp_path / ".maps-x")]
        assert os.path.isdir(live)
    assert sorted(os.listdir(tmp_path)) == [".hidden-notes", ".maps-x", "1", "2"]


def test_scratch_folders_of_a_gone_process_are_removed(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    scratch = tmp_path / f".maps-{gone.pid}-abc123"
    scratch.mkdir()
    (scratch / "a.npy").write_bytes(b"x")
    removed, _ = io_utils.remove_stale_temporaries(str(tmp_path), kinds=("maps",))
    assert removed == [str(scratch)] and not scratch.exists()


def test_temporaries_without_a_pid_are_reported_not_removed(tmp_path):
    old = tmp_path / ".3.tmp-k2j4h5g6"  # the naming of releases before the PID was added
    old.mkdir()
    removed, reported = io_utils.remove_stale_temporaries(str(tmp_path))
    assert removed == [] and reported == [str(old)]
    assert old.exists()


def test_a_version_moved_aside_by_a_killed_writer_is_put_back(tmp_path):
    # atomic_path replaces a directory by moving the old one aside, then the new one in; a kill
    # between the two leaves the target missing and both temporaries behind.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    new = tmp_path / f".1.tmp-{gone.pid}-abc123"
    old = tmp_path / f".1.tmp-{gone.pid}-abc123.old"
    new.mkdir()
    (new / "saved_model.pb").write_text("new")
    old.mkdir()
    (old / "saved_model.pb").write_text("old, whole")
    removed, reported = io_utils.remove_stale_temporaries(str(tmp_path))
    assert removed == [str(new)] and reported == []
    assert os.listdir(tmp_path) == ["1"]
    assert (tmp_path / "1" / "saved_model.pb").read_text() == "old, whole"
