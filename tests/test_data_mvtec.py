"""MVTec AD layout: splits, labels, masks aligned with their images, and every layout mistake."""

import os

import numpy as np
import pytest
from config_helpers import check_max_train_caps_train_only, data_config, images_and_masks
from PIL import Image

from mhp_keras.data import load_data
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.errors import ConfigError, DataError

SIZE = 32  # image side in the fake dataset; the pipeline resizes to 16


def write_image(path, value=120, mode="RGB", size=SIZE):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, (size, size), value if mode == "L" else (value,) * 3).save(path)


def write_defect(root, defect, name, box, mode="RGB"):
    """A defect image with a bright square at box=(top, left, side) and its exact mask."""
    top, left, side = box
    image = np.full((SIZE, SIZE), 60, np.uint8)
    image[top : top + side, left : left + side] = 250
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[top : top + side, left : left + side] = 255
    path = os.path.join(root, "test", defect, f"{name}.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image).convert(mode).save(path)
    mask_path = os.path.join(root, "ground_truth", defect, f"{name}_mask.png")
    os.makedirs(os.path.dirname(mask_path), exist_ok=True)
    Image.fromarray(mask).save(mask_path)
    return path, mask_path


@pytest.fixture
def mvtec(tmp_path):
    """data root with categories 'carpet' (RGB) and 'grid' (grey)."""
    for category, mode in (("carpet", "RGB"), ("grid", "L")):
        root = tmp_path / category
        for i in range(5):
            write_image(root / "train/good" / f"{i:03d}.png", 60, mode)
        write_image(root / "test/good/000.png", 60, mode)
        write_defect(str(root), "hole", "000", (4, 4, 8), mode)
        write_defect(str(root), "hole", "001", (16, 20, 12), mode)
        write_defect(str(root), "cut", "000", (0, 0, 16), mode)
    return str(tmp_path)


def config_for(root, category="carpet", **data):
    defaults = dict(
        name="mvtec",
        root=root,
        category=category,
        normal_class="good",
        image_size=16,
        channels=3,
        batch_size=8,
        val_fraction=0.2,
    )
    return data_config(defaults | data)


@pytest.mark.parametrize("category, channels", [("carpet", 3), ("grid", 3), ("grid", 1)])
def test_end_to_end_with_aligned_masks(mvtec, category, channels):
    config = config_for(mvtec, category, channels=channels)
    data = load_data(config)
    assert data.class_names == ["good", "cut", "hole"]
    assert data.normal_class == "good" and data.has_masks
    assert (len(data.train), len(data.val), len(data.test)) == (4, 1, 4)
    assert data.test.ids == ["good/000.png", "cut/000.png", "hole/000.png", "hole/001.png"]
    assert data.test.labels.tolist() == [0, 1, 1, 1]
    assert data.test.mask_paths[0] == ""
    assert all(p.endswith("_mask.png") for p in data.test.mask_paths[1:])

    (batch,) = list(dataset_for_split(data.train, config, training=True))
    assert batch.shape == (4, 16, 16, channels)
    images, masks, labels = images_and_masks(data.test, config)
    assert images.shape == (4, 16, 16, channels) and masks.shape == (4, 16, 16, 1)
    assert images.min() >= 0 and images.max() <= 1
    assert set(np.unique(masks)) <= {0.0, 1.0}
    assert masks[0].sum() == 0
    # The bright square (the defect) lies exactly under the mask: squares are on even pixels,
    # so the half-size mask is exact; antialiasing blurs the image's edges a little.
    for image, mask in zip(images[1:], masks[1:], strict=True):
        inside, outside = image[..., 0][mask[..., 0] == 1], image[..., 0][mask[..., 0] == 0]
        assert inside.size > 0 and inside.min() > 0.6 and outside.max() < 0.6
        assert inside.mean() > 0.85 and np.median(outside) < 0.3
    expected = np.zeros((16, 16))
    expected[8:14, 10:16] = 1  # hole/001: square (16, 20, 12) at half size
    np.testing.assert_array_equal(masks[3, ..., 0], expected)


def test_training_crops_and_tiles_go_through(mvtec):
    for crop, count in (("random", 4), ("tile", 16)):
        config = config_for(mvtec, crop=crop, image_size=16)
        data = load_data(config)
        batches = list(dataset_for_split(data.train, config, training=True))
        x = np.concatenate([b.numpy() for b in batches])
        assert x.shape == (count, 16, 16, 3)


def test_missing_or_unset_category_lists_the_categories(mvtec):
    for category in ("leather", ""):
        with pytest.raises(DataError, match=r"\['carpet', 'grid'\]"):
            load_data(config_for(mvtec, category))


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_data(config_for(str(tmp_path / "none")))
    assert str(tmp_path / "none") in str(err.value)


def test_category_without_train_good(mvtec):
    os.rename(os.path.join(mvtec, "carpet/train/good"), os.path.join(mvtec, "carpet/train/ok"))
    with pytest.raises(DataError, match="train/good") as err:
        load_data(config_for(mvtec))
    assert "'carpet'" in str(err.value)


def test_defect_image_without_mask(mvtec):
    mask = os.path.join(mvtec, "carpet/ground_truth/hole/001_mask.png")
    os.remove(mask)
    with pytest.raises(DataError, match="has no mask") as err:
        load_data(config_for(mvtec))
    assert os.path.join(mvtec, "carpet/test/hole/001.png") in str(err.value)
    assert mask in str(err.value)


def test_mask_without_image(mvtec):
    os.remove(os.path.join(mvtec, "carpet/test/cut/000.png"))
    with pytest.raises(DataError, match="no matching defect image") as err:
        load_data(config_for(mvtec))
    assert os.path.join(mvtec, "carpet/ground_truth/cut/000_mask.png") in str(err.value)


def test_mask_of_another_size(mvtec):
    mask = os.path.join(mvtec, "carpet/ground_truth/hole/000_mask.png")
    Image.new("L", (SIZE, SIZE + 2)).save(mask)
    with pytest.raises(DataError, match=f"{SIZE}x{SIZE + 2}.*{SIZE}x{SIZE}") as err:
        load_data(config_for(mvtec))
    assert mask in str(err.value)


def test_other_normal_class_is_refused(mvtec):
    with pytest.raises(ConfigError, match="always 'good'"):
        load_data(config_for(mvtec, normal_class="hole"))


def test_bad_mask_is_skipped_with_its_image(mvtec):
    mask = os.path.join(mvtec, "carpet/ground_truth/hole/000_mask.png")
    with open(mask, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="Bad mask file") as err:
        load_data(config_for(mvtec))
    assert mask in str(err.value)
    data = load_data(config_for(mvtec, on_bad_file="skip"))
    assert data.test.ids == ["good/000.png", "cut/000.png", "hole/001.png"]


def test_max_train_caps_train_only(mvtec):
    check_max_train_caps_train_only(lambda **data: config_for(mvtec, **data))
