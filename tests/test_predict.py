"""The predict CLI: scores.csv and heatmaps from a folder, bad files recorded without stopping the
run, exit statuses 0 / 3 / 2, and clean errors for bad input."""

import csv
import json
import os

import matplotlib.colors as mcolors
import numpy as np
import pytest
import tensorflow as tf
from cli_helpers import predict_command, run
from model_helpers import tiny_conad
from PIL import Image

from mhp_keras.cli import EXIT_PARTIAL
from mhp_keras.errors import DataError
from mhp_keras.serving.export import export_saved_model
from mhp_keras.serving.predict import colourise, predict, report


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
    assert list(rows[0]) == [
        "path",
        "score",
        "is_anomalous",
        "normalized_score",
        "winner_index",
        "anomalous_pixels",
        "error",
    ]
    assert all(r["error"] == "" for r in rows)
    assert "could not be scored" not in result.stderr

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

    assert [float(r["normalized_score"]) >= 0.5 for r in rows] == flags
    for folder in ("heatmaps", "masks", "overlays"):
        assert sorted(os.listdir(out_dir / folder)) == ["a.png", "b.png", "c.png"]
    overlay = tf.io.decode_png(tf.io.read_file(str(out_dir / "overlays" / "b.png"))).numpy()
    assert overlay.shape == (20, 24, 3)  # b.png's own size
    heatmap = tf.io.decode_png(tf.io.read_file(str(out_dir / "heatmaps" / "a.png"))).numpy()
    assert heatmap.shape == (128, 128, 3)
    with open(out_dir / "heatmap_scale.json") as f:
        scale = json.load(f)
    assert scale["low"] < scale["high"]
    assert scale["model_threshold"] == pytest.approx(float(loaded_threshold(setup)))
    # The reports' rule: centred on the pixel value of an image scored at the threshold (a sum
    # over the maps' mean size: 16 x 16, 13 x 16 for b.png letterboxed, 16 x 16).
    pixels = (256 + 13 * 16 + 256) // 3
    assert scale["center"] == pytest.approx(float(loaded_threshold(setup)) / pixels)
    assert not [n for n in os.listdir(out_dir) if n.startswith(".")]  # no temporaries left


def loaded_threshold(setup):
    with open(os.path.join(setup["version_dir"], "assets.extra", "mhp_keras.json")) as f:
        return json.load(f)["threshold"]


def test_cli_missing_model_exits_2_without_traceback(setup):
    result = run_cli(
        f"--saved_model={setup['root'] / 'nowhere'}",
        f"--input={setup['folder']}",
        f"--output_dir={setup['root'] / 'out_bad'}",
    )
    assert result.returncode == 2
    assert "nowhere does not exist" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not os.path.exists(setup["root"] / "out_bad" / "scores.csv")


def _copy(source, target):
    with open(source, "rb") as f:
        data = f.read()
    with open(target, "wb") as f:
        f.write(data)


@pytest.fixture(scope="module")
def mixed_folder(setup):
    """The 3 good PNGs, two good TIFFs of different sizes (decoded on the host, one call of
    serving_default per size) and 4 bad files, sorted among them."""
    folder = setup["root"] / "mixed"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        _copy(os.path.join(setup["folder"], name), folder / name)
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "d.tif")
    Image.fromarray(pixels[:12, :, 0].T).save(folder / "e_grey.tiff")
    data = (folder / "a.png").read_bytes()
    (folder / "a_truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "b_notes.jpg").write_text("not an image, whatever the name says")
    (folder / "c_empty.png").write_bytes(b"")
    tiff = (folder / "d.tif").read_bytes()
    (folder / "d_truncated.tif").write_bytes(tiff[: len(tiff) // 2])
    return folder


BAD = ("a_truncated.png", "b_notes.jpg", "c_empty.png", "d_truncated.tif")


def test_cli_scores_every_readable_file_and_exits_3(setup, mixed_folder):
    out_dir = setup["root"] / "out_mixed"
    result = run_cli(
        f"--saved_model={setup['version_dir']}",
        f"--input={mixed_folder}",
        f"--output_dir={out_dir}",
        "--batch_size=3",  # every batch holds a bad file next to good ones
    )
    assert result.returncode == EXIT_PARTIAL == 3, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "scored 5 of 9 images" in result.stdout
    assert "4 of 9 files could not be scored" in result.stderr
    assert all(name in result.stderr for name in BAD)

    with open(out_dir / "scores.csv") as f:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(f)}
    assert len(rows) == 9
    for name in BAD:
        assert rows[name]["error"] and rows[name]["score"] == rows[name]["is_anomalous"] == ""
    assert "is empty" in rows["c_empty.png"]["error"]
    assert rows["d_truncated.tif"]["error"].startswith("not a readable image")

    # The good files score exactly as in a run without the bad ones.
    summary = predict(
        setup["version_dir"], setup["folder"], str(out_dir / "good"), heatmaps=False, progress=False
    )
    assert summary["failed"] == []
    with open(summary["scores_csv"]) as f:
        alone = {os.path.basename(r["path"]): float(r["score"]) for r in csv.DictReader(f)}
    for name, score in alone.items():
        assert float(rows[name]["score"]) == pytest.approx(score, rel=1e-6)
    for name in ("d.tif", "e_grey.tiff"):
        assert rows[name]["error"] == "" and float(rows[name]["score"]) != 0
    assert sorted(os.listdir(out_dir / "heatmaps")) == [
        "a.png",
        "b.png",
        "c.png",
        "d.png",
        "e_grey.png",
    ]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow, on the fake TIFF
def test_every_file_failing_writes_their_rows_and_exits_3(setup, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.tif").write_text("II*\x00 and then nothing that makes a TIFF")
    summary = predict(setup["version_dir"], str(folder), str(tmp_path / "out"), progress=False)
    assert summary["images"] == 0 and len(summary["failed"]) == 2
    with open(tmp_path / "out" / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["score"] for r in rows] == ["", ""] and all(r["error"] for r in rows)
    assert not os.path.exists(tmp_path / "out" / "heatmaps")
    assert report(summary) == EXIT_PARTIAL
    assert "2 of 2 files could not be scored" in capsys.readouterr().err


def test_report_lists_at_most_ten_failures(capsys):
    summary = {
        "saved_model": "m",
        "files": 15,
        "images": 3,
        "failed": [(f"bad{i}.png", "broken") for i in range(12)],
        "anomalous": 0,
        "threshold": 1.0,
        "scores_csv": "out/scores.csv",
    }
    assert report(summary) == EXIT_PARTIAL
    captured = capsys.readouterr()
    assert "scored 3 of 15 images" in captured.out
    assert "bad9.png: broken" in captured.err and "bad10.png" not in captured.err
    assert "... and 2 more" in captured.err
    assert report(summary | {"failed": [], "files": 3}) == 0


def test_single_file_version_dir_and_no_pictures(setup, tmp_path):
    image = os.path.join(setup["folder"], "b.png")
    summary = predict(
        setup["version_dir"],
        image,
        str(tmp_path),
        heatmaps=False,
        masks=False,
        overlays=False,
        progress=False,
    )
    assert summary["images"] == 1 and summary["heatmap_scale"] is None
    for folder in ("heatmaps", "masks", "overlays"):
        assert not os.path.exists(tmp_path / folder)
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


def test_threshold_flags_override_the_stored_ones(setup, tmp_path):
    out_dir = tmp_path / "override"
    result = run_cli(
        f"--saved_model={setup['version_dir']}",
        f"--input={setup['folder']}",
        f"--output_dir={out_dir}",
        "--threshold=-1e9",  # every image is anomalous
        "--pixel_threshold=1e9",  # no pixel is
    )
    assert result.returncode == 0, result.stderr
    with open(out_dir / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert all(r["is_anomalous"] == "true" and float(r["normalized_score"]) >= 0.5 for r in rows)
    assert all(r["anomalous_pixels"] == "0" for r in rows)
    mask = tf.io.decode_png(tf.io.read_file(str(out_dir / "masks" / "a.png"))).numpy()
    assert not mask.any()
    with open(out_dir / "heatmap_scale.json") as f:
        assert json.load(f)["threshold"] == -1e9


def test_mask_outline_marks_the_border_only():
    from mhp_keras.serving.predict import outline

    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    border = outline(mask)
    assert border[1, 1:5].all() and border[4, 1:5].all() and border[1:5, 1].all()
    assert not border[2:4, 2:4].any() and not border[0].any()


def test_a_tiling_model_maps_every_image_at_its_own_size(setup, tmp_path):
    from mhp_keras.serving.export import write_saved_model

    model = tiny_conad(seed=1, channels=3, tiling="tile")
    version_dir = write_saved_model(model, str(tmp_path / "tiled" / "1"))
    summary = predict(version_dir, setup["folder"], str(tmp_path / "out"), progress=False)
    assert summary["images"] == 3 and summary["failed"] == []
    for name, shape in (("a.png", (16, 16)), ("b.png", (20, 24))):
        mask = tf.io.decode_png(tf.io.read_file(str(tmp_path / "out" / "masks" / name))).numpy()
        overlay = tf.io.decode_png(tf.io.read_file(str(tmp_path / "out" / "overlays" / name)))
        assert mask.shape[:2] == shape and overlay.shape[:2] == shape
