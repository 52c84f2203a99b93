"""The predict CLI: scores.csv and heatmaps from a folder, and clean errors for bad input."""

import csv
import json
import os

import matplotlib.colors as mcolors
import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import predict_command, run
from model_helpers import tiny_conad

from mhp_keras.errors import DataError
from mhp_keras.export import export_saved_model
from mhp_keras.predict import colourise, predict


def run_cli(*args):
    return run(predict_command(*args))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny exported RGB model (two versions) and a folder of 3 PNGs of different sizes."""
    model = tiny_conad(seed=0, channels=3)
    root = tmp_path_factory.mktemp("predict")
    base = str(root / "export")
    rng = np.random.default_rng(0)
    images = {
        "a.png": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        "b.png": rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
        "c.png": np.full((16, 16, 1), 128, np.uint8),  # grey: converted to RGB in the graph
    }
    folder = root / "images"
    folder.mkdir()
    for name, image in images.items():
        tf.io.write_file(str(folder / name), tf.io.encode_png(image))
    model.threshold.assign(np.inf)
    export_saved_model(model, base)  # version 1: no threshold
    v1 = tf.saved_model.load(os.path.join(base, "conad", "1")).signatures["serving_bytes"]
    files = [tf.io.read_file(str(folder / name)) for name in sorted(images)]
    scores = np.sort(v1(image_bytes=tf.stack(files))["anomaly_score"].numpy())
    model.threshold.assign(float(scores[0] + scores[1]) / 2)  # flags 2 of 3, far from any score
    version_dir = export_saved_model(model, base)  # version 2, the one predict should pick
    return {"root": root, "base": base, "folder": str(folder), "version_dir": version_dir}


def test_cli_end_to_end(setup):
    out_dir = setup["root"] / "out"
    result = run_cli(
        f"--saved_model={os.path.join(setup['base'], 'conad')}",
        f"--input={setup['folder']}",
        f"--output_dir={out_dir}",
        "--batch_size=2",
    )
    assert result.returncode == 0, result.stderr
    assert "scored 3 images" in result.stdout
    with open(out_dir / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [os.path.basename(r["path"]) for r in rows] == ["a.png", "b.png", "c.png"]
    assert set(rows[0]) == {"path", "score", "is_anomalous", "winner_index"}

    # Same scores as the exported signature on the same files.
    loaded = tf.saved_model.load(setup["version_dir"])
    contents = [tf.io.read_file(r["path"]) for r in rows]
    ref = loaded.signatures["serving_bytes"](image_bytes=tf.stack(contents))
    np.testing.assert_allclose(
        [float(r["score"]) for r in rows], ref["anomaly_score"].numpy(), rtol=1e-6, atol=1e-4
    )
    flags = [r["is_anomalous"] == "true" for r in rows]
    assert flags == ref["is_anomalous"].numpy().tolist() and any(flags) and not all(flags)
    assert [int(r["winner_index"]) for r in rows] == ref["winner_index"].numpy().tolist()

    names = sorted(os.listdir(out_dir / "heatmaps"))
    assert names == ["a.png", "b.png", "c.png"]
    heatmap = tf.io.decode_png(tf.io.read_file(str(out_dir / "heatmaps" / "a.png"))).numpy()
    assert heatmap.shape == (128, 128, 3)
    with open(out_dir / "heatmap_scale.json") as f:
        scale = json.load(f)
    assert scale["low"] < scale["high"]
    assert scale["model_threshold"] == pytest.approx(float(loaded_threshold(setup)))
    # The reports' rule: centred on the pixel value of an image scored at the threshold (a sum
    # over 16 x 16 pixels).
    assert scale["center"] == pytest.approx(float(loaded_threshold(setup)) / 256)
    assert not [n for n in os.listdir(out_dir) if n.startswith(".")]  # no temporaries left


def loaded_threshold(setup):
    with open(os.path.join(setup["version_dir"], "assets.extra", "mhp_keras.json")) as f:
        return json.load(f)["threshold"]


def test_cli_bad_path_exits_2_without_traceback(setup):
    result = run_cli(
        f"--saved_model={setup['root'] / 'nowhere'}",
        f"--input={setup['folder']}",
        f"--output_dir={setup['root'] / 'out_bad'}",
    )
    assert result.returncode == 2
    assert "nowhere does not exist" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_single_file_version_dir_and_no_heatmaps(setup, tmp_path):
    image = os.path.join(setup["folder"], "b.png")
    summary = predict(setup["version_dir"], image, str(tmp_path), heatmaps=False, progress=False)
    assert summary["images"] == 1 and summary["heatmap_scale"] is None
    assert not os.path.exists(tmp_path / "heatmaps")
    with open(tmp_path / "scores.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_version_one_has_no_threshold_and_flags_nothing(setup, tmp_path):
    version_1 = os.path.join(setup["base"], "conad", "1")
    summary = predict(version_1, setup["folder"], str(tmp_path), heatmaps=False, progress=False)
    assert summary["anomalous"] == 0 and summary["threshold"] is None


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing_input", "does not exist"),
        ("empty_folder", "contains no images"),
        ("not_an_image", "is not an image file"),
        ("corrupt", "broken.png could not be decoded"),
        ("no_saved_model", "holds no saved_model.pb"),
    ],
)
def test_bad_input_is_a_data_error(setup, tmp_path, case, match):
    saved_model, folder = setup["version_dir"], setup["folder"]
    if case == "missing_input":
        folder = str(tmp_path / "missing")
    elif case == "empty_folder":
        folder = str(tmp_path / "empty")
        os.makedirs(folder)
    elif case == "not_an_image":
        folder = str(tmp_path / "notes.txt")
        open(folder, "w").close()
    elif case == "corrupt":
        folder = str(tmp_path / "imgs")
        os.makedirs(folder)
        for name in ("a.png", "broken.png", "c.png"):
            with open(os.path.join(setup["folder"], "a.png"), "rb") as f:
                data = f.read()
            with open(os.path.join(folder, name), "wb") as f:
                f.write(b"\x89PNG garbage" if name == "broken.png" else data)
    elif case == "no_saved_model":
        saved_model = str(tmp_path)
    with pytest.raises(DataError, match=match):
        predict(saved_model, folder, str(tmp_path / "out"), batch_size=3, progress=False)
    assert not os.path.exists(tmp_path / "out" / "scores.csv")


def test_colour_scale_is_fixed_not_per_image():
    norm = mcolors.Normalize(0.0, 10.0, clip=True)
    flat = colourise(np.full((16, 16), 5.0), norm)
    low = colourise(np.full((16, 16), -3.0), norm)
    high = colourise(np.full((16, 16), 99.0), norm)
    assert flat.shape == (128, 128, 3)
    # A constant map is a mid colour (a per-image min-max would make it all black or all bright).
    assert not (flat == low).all() and not (flat == high).all()
    assert (low == low[0, 0]).all() and (high == high[0, 0]).all()
