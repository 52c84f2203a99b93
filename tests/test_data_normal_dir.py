"""A folder of good images is enough to start (data.name=folders with data.normal_dir): the split,
optional anomalies and masks, every layout mistake, and a run with normal images only."""

import json
import math
import os

import numpy as np
import pytest
from cli_helpers import run, tiny_flags, train_main_command
from config_helpers import check_max_train_caps_train_only, data_config, images_and_masks
from PIL import Image

from mhp_keras.data import load_data
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.errors import ConfigError, DataError

SIZE = 16


def write_png(path, value=100, size=SIZE, box=None, mode="L"):
    """A flat grey image, with a bright square at box=(top, left, side) if given."""
    pixels = np.full((size, size), value, np.uint8)
    if box:
        top, left, side = box
        pixels[top : top + side, left : left + side] = 250
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return str(path)


def write_mask(path, box, size=SIZE):
    top, left, side = box
    mask = np.zeros((size, size), np.uint8)
    mask[top : top + side, left : left + side] = 255
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(mask).save(path)
    return str(path)


def write_normals(folder, n):
    return [write_png(folder / f"n{i:02d}.png", 40 + 5 * i) for i in range(n)]


# Anomalous image name -> (its mask's file name, the defect square).
DEFECTS = {
    "a0.png": ("a0.png", (2, 2, 4)),  # same stem
    "a1.png": ("a1_mask.png", (8, 4, 6)),  # <stem>_mask
    "a2.jpg": ("a2_mask.bmp", (0, 10, 5)),  # any extension, for the image and the mask
}


@pytest.fixture
def folders(tmp_path):
    """normal/ (20 images), abnormal/ (3 defect images) and masks/ (their masks)."""
    write_normals(tmp_path / "normal", 20)
    for name, (mask_name, box) in DEFECTS.items():
        write_png(tmp_path / "abnormal" / name, 60, box=box, mode="RGB")
        write_mask(tmp_path / "masks" / mask_name, box)
    return {key: str(tmp_path / key) for key in ("normal", "abnormal", "masks")}


def config_for(normal_dir, **data):
    defaults = dict(
        name="folders",
        normal_dir=normal_dir,
        image_size=SIZE,
        channels=1,
        batch_size=8,
        val_fraction=0.25,
        test_fraction=0.3,
    )
    return data_config(defaults | data)


def test_normal_only_splits_every_image_into_one_part(folders):
    data = load_data(config_for(folders["normal"]))
    assert data.class_names == ["normal", "anomalous"] and data.normal_class == "normal"
    # 20 images: 6 test (0.3), then 4 of the other 14 for validation (0.25), 10 train.
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 6)
    parts = [set(s.paths) for s in (data.train, data.val, data.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert set.union(*parts) == {
        os.path.join(folders["normal"], f"n{i:02d}.png") for i in range(20)
    }
    for split in (data.train, data.val, data.test):
        assert split.labels.tolist() == [0] * len(split)
        assert split.paths == sorted(split.paths)
        assert all(i.startswith("normal/n") for i in split.ids)
    assert not data.has_masks


def test_the_split_follows_the_split_seed(folders):
    def parts(**data):
        d = load_data(config_for(folders["normal"], **data))
        return d.train.paths, d.val.paths, d.test.paths

    assert parts() == parts()
    assert parts() != parts(split_seed=1)
    # The test part depends on the seed and test_fraction only, not on the validation share.
    assert parts()[2] == parts(val_fraction=0.5)[2]


def test_normal_class_is_ignored(folders):
    for normal_class in ("0", "good", "anomalous"):
        data = load_data(config_for(folders["normal"], normal_class=normal_class))
        assert data.normal_class == "normal" and len(data.train) == 10


def test_max_train_caps_train_only(tmp_path):
    # 9 images: 3 test (0.3), then 2 of the other 6 for validation, 4 train.
    write_normals(tmp_path / "few", 9)
    check_max_train_caps_train_only(
        lambda **data: config_for(str(tmp_path / "few"), val_fraction=1 / 3, **data)
    )


def test_abnormal_images_join_the_test_split(folders):
    config = config_for(folders["normal"], abnormal_dir=folders["abnormal"])
    data = load_data(config)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 9)
    assert data.test.labels.tolist() == [0] * 6 + [1] * 3
    assert data.test.ids[6:] == ["anomalous/a0.png", "anomalous/a1.png", "anomalous/a2.jpg"]
    assert data.test.mask_paths is None
    assert [r["label"] for r in dataset_for_split(data.test, config, training=False).unbatch()] == [
        0
    ] * 6 + [1] * 3


def test_masks_reach_the_pipeline_aligned_with_their_images(folders):
    config = config_for(
        folders["normal"], abnormal_dir=folders["abnormal"], mask_dir=folders["masks"]
    )
    data = load_data(config)
    assert data.has_masks
    assert data.test.mask_paths[:6] == [""] * 6
    assert [os.path.basename(p) for p in data.test.mask_paths[6:]] == [
        mask for mask, _ in DEFECTS.values()
    ]
    images, masks, labels = images_and_masks(data.test, config)
    assert labels.tolist() == [0] * 6 + [1] * 3
    assert masks.shape == (9, SIZE, SIZE, 1) and not masks[:6].any()
    for (_, (top, left, side)), image, mask in zip(DEFECTS.values(), images[6:], masks[6:]):
        expected = np.zeros((SIZE, SIZE), bool)
        expected[top : top + side, left : left + side] = True
        np.testing.assert_array_equal(mask[..., 0] > 0.5, expected)
        # The mask covers exactly the bright square of its own image.
        assert image[..., 0][expected].min() > 0.8 and image[..., 0][~expected].max() < 0.5


@pytest.mark.parametrize(
    "data, error, expected",
    [
        (dict(normal_dir="{tmp}/nowhere"), ConfigError, "data.normal_dir='{tmp}/nowhere' does not"),
        (dict(abnormal_dir="{tmp}/nowhere"), ConfigError, "data.abnormal_dir='{tmp}/nowhere'"),
        (
            dict(abnormal_dir="{abnormal}", mask_dir="{tmp}/nowhere"),
            ConfigError,
            "data.mask_dir='{tmp}/nowhere'",
        ),
        (dict(root="{tmp}"), ConfigError, "data.root='{tmp}' and data.normal_dir='{normal}'"),
        (dict(normal_dir="", root=""), ConfigError, "data.root is not set"),
        (dict(mask_dir="{masks}"), ConfigError, "data.abnormal_dir is not"),
        (dict(abnormal_dir="{normal}"), ConfigError, "data.normal_dir and data.abnormal_dir"),
        (dict(test_fraction=0.0), ConfigError, "data.test_fraction=0.0"),
        (dict(val_fraction=0.99), DataError, "too few"),
    ],
)
def test_config_mistakes_name_their_keys(folders, tmp_path, data, error, expected):
    values = {"tmp": str(tmp_path), **folders}
    data = {k: v.format(**values) if isinstance(v, str) else v for k, v in data.items()}
    with pytest.raises(error) as raised:
        load_data(config_for(**({"normal_dir": folders["normal"]} | data)))
    assert expected.format(**values) in str(raised.value)


def test_anomaly_folders_are_refused_with_root(tmp_path):
    with pytest.raises(ConfigError, match="data.abnormal_dir=.* is only read with data.normal_dir"):
        load_data(config_for("", root=str(tmp_path), abnormal_dir=str(tmp_path)))


def test_empty_normal_folder(tmp_path):
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="No image files in .*empty.*data.normal_dir"):
        load_data(config_for(str(tmp_path / "empty")))


def with_masks(folders, **data):
    return config_for(
        folders["normal"], abnormal_dir=folders["abnormal"], mask_dir=folders["masks"], **data
    )


def test_mask_without_image(folders):
    stray = write_mask(os.path.join(folders["masks"], "zz_mask.png"), (0, 0, 2))
    with pytest.raises(DataError, match="has no matching anomalous image") as err:
        load_data(with_masks(folders))
    assert stray in str(err.value) and "zz.*" in str(err.value)


def test_image_without_mask(folders):
    os.remove(os.path.join(folders["masks"], "a1_mask.png"))
    with pytest.raises(DataError, match="has no mask") as err:
        load_data(with_masks(folders))
    assert os.path.join(folders["abnormal"], "a1.png") in str(err.value)


def test_two_masks_for_one_image(folders):
    write_mask(os.path.join(folders["masks"], "a0_mask.png"), (2, 2, 4))
    with pytest.raises(DataError, match="a0.png has two masks"):
        load_data(with_masks(folders))


def test_mask_of_another_size(folders):
    mask = write_mask(os.path.join(folders["masks"], "a0.png"), (2, 2, 4), size=SIZE * 2)
    with pytest.raises(DataError, match="a mask must have the size of its image") as err:
        load_data(with_masks(folders))
    assert mask in str(err.value)


def test_a_bad_mask_is_skipped_with_its_image(folders):
    bad = os.path.join(folders["masks"], "a1_mask.png")
    with open(bad, "w") as f:
        f.write("not a png")
    with pytest.raises(DataError, match="Bad mask file"):
        load_data(with_masks(folders))
    data = load_data(with_masks(folders, on_bad_file="skip"))
    assert data.test.ids[6:] == ["anomalous/a0.png", "anomalous/a2.jpg"]


@pytest.mark.slow
def test_train_and_evaluate_with_normal_images_only(tmp_path):
    rng = np.random.default_rng(0)
    os.makedirs(tmp_path / "good")
    for i in range(30):
        pixels = (100 + 30 * rng.random((SIZE, SIZE))).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "good" / f"{i:02d}.png")
    workdir = tmp_path / "run"
    result = run(
        train_main_command(
            "--config=configs/good_images.py",
            f"--workdir={workdir}",
            f"--config.data.normal_dir={tmp_path / 'good'}",
            f"--config.data.image_size={SIZE}",
            "--config.data.val_fraction=0.2",
            "--config.data.batch_size=8",
            *tiny_flags(epochs=1, report=True),
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "RESULT image_auroc=n/a (no anomalous test images: add data.abnormal_dir)" in result.stdout
    )
    assert "need anomalous test images" in result.stderr
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["image_auroc"] is None and metrics["n_anomalous"] == 0
    assert metrics["n_test"] == 9 and metrics["n_train"] + metrics["n_val"] == 21
    assert math.isfinite(metrics["threshold"])
    normal = metrics["normal_scores"]
    assert normal["n"] == 9 and normal["min"] <= normal["median"] <= normal["max"]
    assert 0.0 <= normal["flagged_fraction"] <= 1.0
    assert {"roc.png", "histogram.png", "examples.png"} <= set(os.listdir(workdir / "report"))
