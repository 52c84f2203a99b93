"""mhp-predict against the file system's awkward cases, each made for real: file names that are
not UTF-8, named pipes named like images, images larger than a picture may be, a full disk, and
the scratch folder a killed run leaves behind."""

import contextlib
import csv
import errno
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import predict_command, run
from model_helpers import tiny_conad

from mhp_keras.errors import DiskFull
from mhp_keras.serving import pictures
from mhp_keras.serving import predict as predict_module
from mhp_keras.serving.export import write_saved_model
from mhp_keras.serving.predict import predict, report

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny tiling SavedModel (maps at each image's own size) and one good PNG's bytes."""
    root = tmp_path_factory.mktemp("faults")
    version_dir = write_saved_model(
        tiny_conad(seed=0, channels=3, tiling="tile"), str(root / "m" / "1")
    )
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    return {"dir": version_dir, "png": tf.io.encode_png(pixels).numpy()}


def _rows(out_dir):
    with open(os.path.join(out_dir, "scores.csv"), encoding="utf-8") as f:
        return list(csv.DictReader(f))


@contextlib.contextmanager
def _deadline(seconds):
    """Fails the test instead of hanging for ever (an open() of a FIFO blocks until a writer)."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_non_utf8_file_name_is_scored_and_written_escaped(model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(model["png"])
    try:
        with open(os.path.join(os.fsencode(folder), b"bad\xff.png"), "wb") as f:
            f.write(model["png"])
    except OSError as e:  # some file systems (e.g. strict UTF-8 ones) refuse such names
        pytest.skip(f"the file system refuses a non-UTF-8 name: {e}")
    out = tmp_path / "out"
    summary = predict(model["dir"], str(folder), str(out), progress=False)
    assert report(summary) == 0, capsys.readouterr().err
    rows = _rows(out)
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png", "bad\\xff.png"]
    assert all(r["score"] and r["error"] == "" for r in rows)
    for kind in ("heatmaps", "masks", "overlays"):
        assert sorted(os.listdir(out / kind)) == ["a.png", "bad\\xff.png"]


def _fifo_folder(tmp_path, png, sub=""):
    folder = tmp_path / "in"
    (folder / sub).mkdir(parents=True)
    (folder / "a.png").write_bytes(png)
    os.mkfifo(folder / sub / "x.png")
    return folder


@pytest.mark.parametrize("recursive", [False, True])
def test_a_named_pipe_is_skipped_with_its_row_never_opened(model, tmp_path, recursive, capsys):
    folder = _fifo_folder(tmp_path, model["png"], "sub" if recursive else "")
    out = tmp_path / "out"
    with _deadline(120):
        summary = predict(model["dir"], str(folder), str(out), recursive=recursive, progress=False)
    assert report(summary) == 3
    rows = {os.path.relpath(r["path"], folder): r for r in _rows(out)}
    fifo = os.path.join("sub", "x.png") if recursive else "x.png"
    assert sorted(rows) == sorted(["a.png", fifo])
    assert rows["a.png"]["score"] and rows["a.png"]["error"] == ""
    assert rows[fifo]["score"] == ""
    assert rows[fifo]["error"] == "is a named pipe, not a regular file; skipped without reading it"
    assert "x.png: is a named pipe" in capsys.readouterr().err
    assert sorted(os.listdir(out / "masks")) == ["a.png"]


def test_a_named_pipe_as_input_gets_its_row_and_exit_3(model, tmp_path):
    folder = _fifo_folder(tmp_path, model["png"])
    link = folder / "link.png"  # a symlink to a regular file is scored
    link.symlink_to(folder / "a.png")
    out = tmp_path / "out"
    fifo = str(folder / "x.png")
    args = (f"--saved_model={model['dir']}", f"--output_dir={out}", "--nooverlays")
    result = run(predict_command(*args, f"--input={fifo}"), timeout=120)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert [(r["path"], r["score"]) for r in _rows(out)] == [(fifo, "")]
    assert "is a named pipe" in _rows(out)[0]["error"]
    summary = predict(model["dir"], str(link), str(tmp_path / "out2"), progress=False)
    assert summary["images"] == 1 and summary["failed"] == []


def test_a_large_image_has_bounded_pictures_and_a_full_size_mask(model, tmp_path):
    # Longer than MAX_PICTURE_SIDE yet cheap to score: a thin strip.
    side = pictures.MAX_PICTURE_SIDE + 100
    pixels = np.random.default_rng(2).integers(0, 256, (32, side, 3), dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    tf.io.write_file(str(folder / "wide.png"), tf.io.encode_png(pixels))
    out = tmp_path / "out"
    summary = predict(model["dir"], str(folder), str(out), progress=False)
    assert summary["images"] == 1

    def shape(kind):
        return tf.io.decode_png(tf.io.read_file(str(out / kind / "wide.png"))).numpy().shape

    assert shape("masks")[:2] == (32, side)  # data: full size
    assert shape("overlays")[:2] == (16, side // 2)  # pictures: every 2nd pixel
    assert shape("heatmaps")[:2] == (16, side // 2)
    assert max(shape("overlays")) <= pictures.MAX_PICTURE_SIDE


def _failing_open(real_open):
    """`open` for pictures.py whose writes of PNGs fail as on a full disk."""

    class Full:
        def __init__(self, path):
            self.path = path
            real_open(path, "wb").close()  # the temporary exists, as a real write leaves it

        def write(self, data):
            raise ENOSPC

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_open(path, mode="r", *args, **kwargs):
        if not path.endswith(".png"):  # the scratch maps are written as usual
            return real_open(path, mode, *args, **kwargs)
        return Full(path)

    return fake_open


def test_full_disk_while_writing_pictures_keeps_scores_csv_and_exits_3(
    model, tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(model["png"])
    out = tmp_path / "out"
    monkeypatch.setattr(pictures, "open", _failing_open(open), raising=False)
    summary = predict(model["dir"], str(folder), str(out), progress=False)
    assert report(summary) == 3
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"error: could not write {out / 'heatmaps' / 'a.png'}: No space left on device" in err
    assert "scores.csv is complete" in err and "Free some space" in err
    assert _rows(out)[0]["score"]  # scores.csv whole
    assert os.listdir(out / "heatmaps") == []  # no temporary left behind
    assert sorted(os.listdir(out)) == ["heatmaps", "scores.csv"]


def test_full_disk_while_writing_scores_csv_writes_nothing(model, tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(model["png"])
    out = tmp_path / "out"

    def full(path, text):
        raise ENOSPC

    monkeypatch.setattr(predict_module, "write_text_atomic", full)
    with pytest.raises(DiskFull, match=r"could not write .*scores\.csv: No space left") as e:
        predict(model["dir"], str(folder), str(out), progress=False)
    assert "No scores.csv was written" in str(e.value)
    assert os.listdir(out) == []  # the scratch folder is gone too


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB tmpfs, or a skip when this process may not mount one."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_ends_in_one_error_paragraph(model, tmp_path, small_tmpfs):
    folder = tmp_path / "in"
    folder.mkdir()
    pixels = np.random.default_rng(3).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    tf.io.write_file(str(folder / "a.png"), tf.io.encode_png(pixels))  # ~480 KB of pictures
    (small_tmpfs / "filler").write_bytes(b"\0" * (1024 * 1024 - 300 * 1024))
    out = small_tmpfs / "out"
    result = run(
        predict_command(f"--saved_model={model['dir']}", f"--input={folder}", f"--output_dir={out}")
    )
    assert result.returncode in (2, 3), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("error:") == 1
    assert "No space left on device" in result.stderr and "Free some space" in result.stderr
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no scratch nor temporaries
    if result.returncode == 3:
        assert _rows(out)[0]["score"]
    for kind in ("heatmaps", "masks", "overlays"):
        for name in os.listdir(out / kind) if (out / kind).is_dir() else []:
            tf.io.decode_png(tf.io.read_file(str(out / kind / name)))  # whole, or absent


def test_a_killed_runs_scratch_folder_is_removed_by_the_next_run(model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(model["png"])
    out = tmp_path / "out"
    out.mkdir()
    # A real predict process killed while it scores: its scratch folder stays behind.
    killed = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, model["dir"], str(folder), str(out)],
        stdout=subprocess.PIPE,
    )
    assert killed.stdout.readline().strip() == b"scoring"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    left = [n for n in os.listdir(out) if n.startswith(f".maps-{killed.pid}-")]
    assert len(left) == 1
    (out / ".maps-abc123").mkdir()  # an older release's, without a PID: reported, kept
    summary = predict(model["dir"], str(folder), str(out), progress=False)
    assert summary["images"] == 1
    err = capsys.readouterr().err
    assert f"removed 1 scratch folder(s) left by killed runs: {out / left[0]}" in err
    assert "kept 1 old scratch folder(s) of unknown owner" in err and ".maps-abc123" in err
    assert sorted(n for n in os.listdir(out) if n.startswith(".")) == [".maps-abc123"]


# Runs predict and stops for ever at its first scored batch, so the test can kill it there.
_KILLED_RUN = """
import sys, time
from mhp_keras.serving import predict as p
real = p._scored_row
def stop(*a):
    print("scoring", flush=True)
    time.sleep(600)
p._scored_row = stop
p.predict(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
"""
