"""Shared by the data-loader tests: the default config with only its `data` section changed, and
a split read back through the evaluation pipeline."""

import numpy as np

from mhp_keras.config.defaults import base_config
from mhp_keras.data.pipeline import dataset_for_split


def data_config(fields: dict):
    """`base_config()` with each `data.<key>` of `fields` set; later keys of a merged dict win,
    so a test's defaults can be overridden with `defaults | overrides`."""
    c = base_config()
    for key, value in fields.items():
        c.data[key] = value
    return c


def images_and_masks(split, config):
    """A split's images [N, h, w, C], masks [N, h, w, 1] and labels [N], as the evaluation
    pipeline gives them."""
    rows = list(dataset_for_split(split, config, training=False).unbatch().as_numpy_iterator())
    return tuple(np.stack([r[key] for r in rows]) for key in ("image", "mask", "label"))


def check_max_train_caps_train_only(config_for):
    """`data.max_train` cuts train after the validation split: val and test never change.
    `config_for(**data)` makes a config of a 6-normal-image dataset (4 train, 2 val)."""
    from mhp_keras.data import load_data

    full = load_data(config_for())
    capped = load_data(config_for(max_train=2))
    assert (len(full.train), len(capped.train)) == (4, 2)
    assert capped.train.paths == full.train.paths[:2]
    assert capped.val.paths == full.val.paths and capped.test.paths == full.test.paths
    assert load_data(config_for(max_train=100)).train.paths == full.train.paths
