"""The offline default dataset: scikit-learn's bundled 8x8 handwritten digits (no download).

The digits have no official test split, so a stratified `data.test_fraction` of every class is held
out as the test split, fixed by `data.split_seed`; the one-class protocol is applied on top.
"""

import numpy as np
from sklearn.datasets import load_digits as sklearn_digits

from mhp_keras.data.base import ImageSet
from mhp_keras.data.protocol import one_class_split


def load_digits(config):
    bunch = sklearn_digits()
    images = (bunch.images.astype(np.float32) / 16.0)[..., None]  # pixel values are 0..16
    classes = bunch.target.astype(np.int32)
    rng = np.random.default_rng(config.data.split_seed)
    test_index = []
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        test_index.extend(
            rng.choice(members, round(len(members) * config.data.test_fraction), replace=False)
        )
    is_test = np.zeros(len(classes), bool)
    is_test[test_index] = True
    ids = [f"digit_{i:04d}" for i in range(len(classes))]
    everything = ImageSet(labels=classes, ids=ids, images=images)
    train = everything.subset(np.flatnonzero(~is_test))
    test = everything.subset(np.flatnonzero(is_test))
    names = [str(c) for c in range(10)]
    return one_class_split(train, classes[~is_test], test, classes[is_test], names, config)
