"""The paper's benchmark datasets (CIFAR-10, MNIST, Fashion-MNIST, SVHN) via TensorFlow Datasets.

tfds gives the official train/test splits and class names, and caches prepared data under
`data.data_dir` (default ~/tensorflow_datasets), so machines without network access can use data
prepared elsewhere. These datasets are small, so they are read into numpy arrays once and go
through the same pipeline and one-class protocol (`data.normal_class`) as every other source.
"""

from __future__ import annotations

import numpy as np

from mhp_keras.data.base import ImageSet, OneClassData
from mhp_keras.data.protocol import one_class_split, resolve_normal_class
from mhp_keras.errors import ConfigError, DataError

TFDS_NAMES = ("cifar10", "mnist", "fashion_mnist", "svhn_cropped")
SPLITS = ("train", "test")


def _load(name: str, data_dir: str | None, download: bool):
    import tensorflow_datasets as tfds

    return tfds.load(
        name,
        split=list(SPLITS),
        data_dir=data_dir,
        download=download,
        as_supervised=True,
        with_info=True,
    )


def _as_arrays(ds) -> tuple[np.ndarray, np.ndarray]:
    """A supervised tf.data split as (uint8 images [N, h, w, c], int labels [N])."""
    import tensorflow_datasets as tfds

    images, labels = [], []
    for x, y in tfds.as_numpy(ds.batch(4096)):
        images.append(x)
        labels.append(y)
    if not images:
        raise DataError("The tfds split is empty.")
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _load_or_explain(name: str, data_dir: str | None):
    """tfds.load of prepared data, else a download; a failed download becomes a DataError."""
    try:
        return _load(name, data_dir, download=False)
    except Exception:  # not prepared in data_dir (tfds raises AssertionError or its own types)
        pass
    try:
        return _load(name, data_dir, download=True)
    except Exception as err:
        where = data_dir or "~/tensorflow_datasets (the tfds default)"
        raise DataError(
            f"The tfds dataset {name!r} (data.tfds_name) is not prepared in {where} and could not "
            f"be downloaded (no network?): {type(err).__name__}: {str(err)[:300]}. Prepare it on a "
            f"machine with network access (`tfds build {name}`, or run this once there), copy its "
            f"tensorflow_datasets folder (holding {name}/) here, and point "
            "--config.data.data_dir at that folder."
        ) from err


def _to_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255.0


def load_tfds(config) -> OneClassData:
    """OneClassData for `data.tfds_name` with the one-class protocol on its train/test splits."""
    name = config.data.tfds_name
    if name not in TFDS_NAMES:
        raise ConfigError(
            f"data.tfds_name={name!r} is not supported: expected one of {list(TFDS_NAMES)}."
        )
    splits, info = _load_or_explain(name, config.data.data_dir or None)
    class_names = [str(n) for n in info.features["label"].names]
    normal = resolve_normal_class(config.data.normal_class, class_names)
    (train_x, train_y), (test_x, test_y) = (_as_arrays(s) for s in splits)
    # Only the normal training images are kept, so only they are converted to float32.
    keep = np.flatnonzero(train_y == normal)
    train = ImageSet(
        labels=train_y[keep],
        ids=[f"train_{i:05d}" for i in keep],
        images=_to_float(train_x[keep]),
    )
    test = ImageSet(
        labels=test_y,
        ids=[f"test_{i:05d}" for i in range(len(test_y))],
        images=_to_float(test_x),
    )
    return one_class_split(train, train_y[keep], test, test_y, class_names, config)
