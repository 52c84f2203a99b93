"""The paper's one-class protocol applied to a labelled dataset with train and test splits.

Train (and validation) keep only the normal class; test keeps every class, labelled
1 = anomalous (class != normal). Shared by every labelled source (digits, tfds, class folders).
"""

from __future__ import annotations

import numpy as np

from mhp_keras.data.base import ImageSet, OneClassData, split_train_val
from mhp_keras.errors import ConfigError


def resolve_normal_class(normal_class, class_names: list[str]) -> int:
    """Index of `data.normal_class`, given as a class name or as an index; lists valid values."""
    text = str(normal_class)
    if text in class_names:
        return class_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
        return int(text)
    raise ConfigError(
        f"data.normal_class={normal_class!r} does not exist: expected one of {class_names} "
        f"(or an index 0..{len(class_names) - 1})."
    )


def one_class_split(
    train: ImageSet,
    train_classes: np.ndarray,
    test: ImageSet,
    test_classes: np.ndarray,
    class_names: list[str],
    config,
) -> OneClassData:
    """Builds OneClassData from class-labelled train/test sets (labels there are class indices)."""
    normal = resolve_normal_class(config.data.normal_class, class_names)
    normal_train = train.subset(np.flatnonzero(train_classes == normal))
    normal_train, val = split_train_val(normal_train, config)
    normal_train.labels[:] = 0
    val.labels[:] = 0
    test = test.subset(np.arange(len(test)))
    test.labels = (np.asarray(test_classes) != normal).astype(np.int32)
    return OneClassData(
        train=normal_train,
        val=val,
        test=test,
        channels=config.data.channels,
        class_names=list(class_names),
        normal_class=class_names[normal],
    )
