"""Class folders (root/{train,test}/<class>/) through the one-class protocol and the pipeline."""

import os

import numpy as np
import pytest
from config_helpers import check_max_train_caps_train_only, data_config
from PIL import Image

from mhp_keras.data import load_data
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.errors import ConfigError, DataError


def write(path, value, size=(12, 12), mode="L"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * len(mode)).save(path)


@pytest.fixture
def root(tmp_path):
    """good: 5 train + 2 test (mixed formats, sizes, modes); bad: 3 + 2; odd: test only."""
    r = tmp_path / "parts"
    for i in range(5):
        write(r / "train/good" / f"g{i}.png", 100, size=(12 + i, 10), mode="RGB" if i % 2 else "L")
    for i in range(3):
        write(r / "train/bad" / f"b{i}.png", 200)
    write(r / "test/good/t0.jpg", 100, size=(20, 20), mode="RGB")
    write(r / "test/good/t1.bmp", 100, size=(8, 30))
    write(r / "test/bad/t2.png", 220, mode="RGBA")
    write(r / "test/bad/t3.PNG", 220)
    write(r / "test/odd/t4.jpeg", 10)
    return str(r)


def config_for(root, **data):
    defaults = dict(
        name="folders",
        root=root,
        normal_class="good",
        image_size=16,
        channels=3,
        batch_size=4,
        val_fraction=0.2,
    )
    return data_config(defaults | data)


def test_end_to_end(root):
    config = config_for(root)
    data = load_data(config)
    assert data.class_names == ["bad", "good", "odd"]
    assert data.normal_class == "good"
    assert (len(data.train), len(data.val), len(data.test)) == (4, 1, 5)
    assert all("good" in p for p in data.train.paths + data.val.paths)
    assert data.test.ids == [
        "bad/t2.png",
        "bad/t3.PNG",
        "good/t0.jpg",
        "good/t1.bmp",
        "odd/t4.jpeg",
    ]
    assert data.test.labels.tolist() == [1, 1, 0, 0, 1]
    (train_batch,) = list(dataset_for_split(data.train, config, training=True))
    assert train_batch.shape == (4, 16, 16, 3)
    rows = list(dataset_for_split(data.test, config, training=False).unbatch().as_numpy_iterator())
    images = np.stack([r["image"] for r in rows])
    assert images.shape == (5, 16, 16, 3) and images.min() >= 0 and images.max() <= 1
    # Column 2: t1.bmp (8 x 30) is letterboxed into 4 x 16 pixels at the left.
    np.testing.assert_allclose(
        images[:, 8, 2, 0], [220 / 255, 220 / 255, 100 / 255, 100 / 255, 10 / 255], atol=0.01
    )
    assert [r["label"] for r in rows] == [1, 1, 0, 0, 1]


def test_index_picks_the_sorted_class(root):
    assert load_data(config_for(root, normal_class="0")).normal_class == "bad"


def test_missing_root(tmp_path):
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="does not exist") as err:
        load_data(config_for(missing))
    assert missing in str(err.value)
    with pytest.raises(ConfigError, match="data.root is not set"):
        load_data(config_for(""))


def test_missing_split_folder(root):
    os.rename(os.path.join(root, "test"), os.path.join(root, "testing"))
    with pytest.raises(DataError, match="Missing split folder") as err:
        load_data(config_for(root))
    assert os.path.join(root, "test") in str(err.value)


def test_empty_class_folder(root):
    os.makedirs(os.path.join(root, "test", "empty"))
    with pytest.raises(DataError, match="Empty class folder") as err:
        load_data(config_for(root))
    assert os.path.join(root, "test", "empty") in str(err.value)


def test_unknown_normal_class_lists_the_classes(root):
    with pytest.raises(ConfigError, match=r"'nope'.*\['bad', 'good', 'odd'\]"):
        load_data(config_for(root, normal_class="nope"))


def test_normal_class_without_training_images(root):
    with pytest.raises(DataError, match="'odd'.*no training folder"):
        load_data(config_for(root, normal_class="odd"))


def test_bad_file_raises_or_is_skipped(root):
    bad = os.path.join(root, "test", "bad", "broken.png")
    with open(bad, "w") as f:
        f.write("not a png")
    with pytest.raises(DataError) as err:
        load_data(config_for(root))
    assert bad in str(err.value)
    data = load_data(config_for(root, on_bad_file="skip"))
    assert len(data.test) == 5 and bad not in data.test.paths


def test_max_train_caps_train_only(root):
    check_max_train_caps_train_only(lambda **data: config_for(root, **data))
