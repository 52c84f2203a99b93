"""Faults around the TF Serving export: bad items of a bytes request, a full disk, a killed export.

Each fault is made for real (empty and corrupt encoded images, an injected and a real ENOSPC, a
SIGKILLed exporting process); the tests check the message and what is left on disk.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

import mhp_keras.serving.export as export
from mhp_keras.errors import UserError
from mhp_keras.serving.export import existing_versions, export_saved_model

TESTS = os.path.dirname(os.path.abspath(__file__))


def png(seed=0, size=16):
    image = np.random.default_rng(seed).integers(0, 256, (size, size, 1), dtype=np.uint8)
    return tf.io.encode_png(image).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("faults"))
    model = tiny_conad(seed=0)
    return {"model": model, "path": export_saved_model(model, base)}


@pytest.fixture(scope="module")
def serving_bytes(exported):
    return tf.saved_model.load(exported["path"]).signatures["serving_bytes"]


def failure(signature, items) -> str:
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        signature(image_bytes=tf.constant(items))
    return info.value.message


def test_empty_item_is_named_by_index(serving_bytes):
    message = failure(serving_bytes, [png(0), png(1), b""])
    assert "image_bytes[2] is empty" in message
    assert "image_bytes[0]" not in message and "image_bytes[1]" not in message


def test_corrupt_items_are_named_by_index(serving_bytes):
    random_bytes = np.random.default_rng(3).bytes(200)
    truncated = png(4)[:40]  # a real PNG header, cut inside the image data
    message = failure(serving_bytes, [png(0), random_bytes, truncated, b"", png(5)])
    assert "image_bytes[1] could not be decoded as PNG/JPEG/GIF/BMP" in message
    assert "image_bytes[2] could not be decoded as PNG/JPEG/GIF/BMP" in message
    assert "image_bytes[3] is empty" in message
    assert not re.search(r"image_bytes\[[04]\]", message)


def test_good_items_still_score_after_a_failed_request(serving_bytes, exported):
    failure(serving_bytes, [b""])
    items = [png(0), png(1, size=20)]
    out = serving_bytes(image_bytes=tf.constant(items))
    assert out["anomaly_score"].shape == (2,)
    assert np.isfinite(out["anomaly_score"].numpy()).all()


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
        OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
        tf.errors.ResourceExhaustedError(None, None, "write failed: No space left on device"),
    ],
    ids=["ENOSPC", "EDQUOT", "tf-writer"],
)
def test_full_disk_is_a_user_error_and_leaves_nothing(exported, tmp_path, monkeypatch, error):
    base = str(tmp_path)
    first = export_saved_model(exported["model"], base)
    seen = {}

    def full_disk(path, payload):  # the metadata write, after the SavedModel itself is written
        seen["tmp"] = os.path.dirname(os.path.dirname(path))
        assert os.path.isfile(os.path.join(seen["tmp"], "saved_model.pb"))
        raise error

    monkeypatch.setattr(export, "write_json_atomic", full_disk)
    final = os.path.join(base, "conad", "2")
    with pytest.raises(UserError) as info:
        export_saved_model(exported["model"], base)
    message = str(info.value)
    assert final in message and "free space" in message.lower() and "--mode=export" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert os.listdir(os.path.join(base, "conad")) == ["1"]  # no version 2, no temporary
    assert not os.path.exists(seen["tmp"])
    assert os.path.isfile(os.path.join(first, "saved_model.pb"))


def test_other_os_errors_are_not_reworded(exported, tmp_path, monkeypatch):
    def denied(path, payload):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(export, "write_json_atomic", denied)
    with pytest.raises(PermissionError):
        export_saved_model(exported["model"], str(tmp_path))
    assert os.listdir(os.path.join(str(tmp_path), "conad")) == []


def test_real_full_tmpfs_is_a_user_error(exported, tmp_path):
    mount = str(tmp_path / "small")
    os.makedirs(mount)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mount],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        with pytest.raises(UserError) as info:
            export_saved_model(exported["model"], mount)
        message = str(info.value)
        assert os.path.join(mount, "conad", "1") in message
        assert "free space" in message.lower() and "--mode=export" in message
        assert os.listdir(os.path.join(mount, "conad")) == []
    finally:
        subprocess.run(["umount", mount], check=False)


CHILD = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, {tests!r})
    from model_helpers import tiny_conad
    import mhp_keras.serving.export as export

    def stall(path, payload):  # the SavedModel is in the temporary: signal, then wait for the kill
        open({ready!r}, "w").close()
        time.sleep(600)

    export.write_json_atomic = stall
    export.export_saved_model(tiny_conad(seed=0), {base!r})
    """
)


def test_killed_export_leftover_is_removed_by_the_next_export(exported, tmp_path, caplog):
    base, ready = str(tmp_path / "export"), str(tmp_path / "ready")
    first = export_saved_model(exported["model"], base)
    model_dir = os.path.dirname(first)
    script = CHILD.format(tests=TESTS, ready=ready, base=base)
    child = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    )
    try:
        deadline = time.monotonic() + 240
        while not os.path.exists(ready):
            assert child.poll() is None, "the exporting child exited before writing"
            assert time.monotonic() < deadline, "the exporting child never reached the write"
            time.sleep(0.2)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    leftovers = [n for n in os.listdir(model_dir) if n.startswith(f".2.tmp-{child.pid}-")]
    assert len(leftovers) == 1, os.listdir(model_dir)
    assert os.path.isfile(os.path.join(model_dir, leftovers[0], "saved_model.pb"))

    with caplog.at_level("WARNING"):
        second = export_saved_model(exported["model"], base)
    assert second == os.path.join(model_dir, "2")
    assert sorted(os.listdir(model_dir)) == ["1", "2"]
    assert existing_versions(model_dir) == [1, 2]
    assert any(
        leftovers[0] in r.getMessage() and "killed" in r.getMessage() for r in caplog.records
    )
    for version in (first, second):
        assert os.path.isfile(os.path.join(version, export.METADATA_FILE))
    out = tf.saved_model.load(first).signatures["serving_bytes"](image_bytes=tf.constant([png()]))
    assert out["anomaly_score"].shape == (1,)


def test_old_pid_less_temporary_is_kept_and_reported(exported, tmp_path, caplog):
    model_dir = tmp_path / "conad"
    old = model_dir / ".1.tmp-k3j9x2ab"  # an older release's name: no PID, so maybe still live
    old.mkdir(parents=True)
    (old / "saved_model.pb").write_bytes(b"partial")
    with caplog.at_level("WARNING"):
        path = export_saved_model(exported["model"], str(tmp_path))
    assert path == str(model_dir / "1")
    assert sorted(os.listdir(model_dir)) == [".1.tmp-k3j9x2ab", "1"]
    assert any(str(old) in r.getMessage() and "older" in r.getMessage() for r in caplog.records)
