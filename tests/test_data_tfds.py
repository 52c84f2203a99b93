"""tfds sources on mocked data (no download): one-class protocol, pipeline, offline error."""

import numpy as np
import pytest
import tensorflow_datasets as tfds
from config_helpers import data_config

from mhp_keras.data import load_data
from mhp_keras.data.pipeline import dataset_for_split
from mhp_keras.errors import ConfigError, DataError


def config_for(name, **data):
    defaults = dict(
        name="tfds",
        tfds_name=name,
        image_size=16,
        channels=3 if name in ("cifar10", "svhn_cropped") else 1,
        batch_size=64,
        val_fraction=0.25,
    )
    return data_config(defaults | data)


@pytest.mark.parametrize(
    "name, normal, shape",
    [
        ("mnist", "3", (28, 28, 1)),
        ("cifar10", "1", (32, 32, 3)),
        ("fashion_mnist", "Trouser", None),
    ],
)
def test_one_class_protocol_through_the_pipeline(name, normal, shape):
    config = config_for(name, normal_class=normal)
    with tfds.testing.mock_data(num_examples=60):
        data = load_data(config)
    assert len(data.class_names) == 10 and data.normal_class == normal
    assert len(data.test) == 60
    # Mock labels are random in 0..9, so every split has about 6 normal images.
    assert 2 <= len(data.train) + len(data.val) <= 20
    assert data.train.labels.sum() == 0 and data.val.labels.sum() == 0
    assert 0 < data.test.labels.sum() < 60
    if shape:
        assert data.train.images.shape[1:] == shape and data.train.images.dtype == np.float32
    assert data.test.images.min() >= 0 and data.test.images.max() <= 1
    (batch,) = list(dataset_for_split(data.train, config, training=True))
    assert batch.shape == (len(data.train), 16, 16, config.data.channels)
    rows = list(dataset_for_split(data.test, config, training=False).unbatch().as_numpy_iterator())
    assert [r["label"] for r in rows] == data.test.labels.tolist()
    assert rows[0]["image"].shape == (16, 16, config.data.channels)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"'imagenet2012'.*\['cifar10', 'mnist', 'fashion_mnist'"):
        load_data(config_for("imagenet2012"))


def test_unknown_normal_class_lists_the_classes():
    with (
        tfds.testing.mock_data(num_examples=10),
        pytest.raises(ConfigError, match="'Hat'.*'Trouser'"),
    ):
        load_data(config_for("fashion_mnist", normal_class="Hat"))


def test_offline_without_prepared_data_explains_what_to_do(monkeypatch, tmp_path):
    calls = []

    def fake_load(name, **kwargs):
        calls.append(kwargs)
        if not kwargs["download"]:
            raise AssertionError(f"Dataset {name} not found in {kwargs['data_dir']}")
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'")

    monkeypatch.setattr(tfds, "load", fake_load)
    with pytest.raises(DataError) as err:
        load_data(config_for("cifar10", data_dir=str(tmp_path)))
    message = str(err.value)
    assert "could not be downloaded (no network?)" in message
    assert str(tmp_path) in message and "tfds build cifar10" in message
    assert "data.data_dir" in message and "ConnectionError" in message
    assert [c["download"] for c in calls] == [False, True]
    assert all(c["data_dir"] == str(tmp_path) for c in calls)


def test_default_data_dir_is_passed_as_none(monkeypatch):
    seen = []

    def fake_load(name, **kwargs):
        seen.append(kwargs["data_dir"])
        raise OSError("offline")

    monkeypatch.setattr(tfds, "load", fake_load)
    with pytest.raises(DataError, match="tensorflow_datasets"):
        load_data(config_for("mnist"))
    assert seen == [None, None]
