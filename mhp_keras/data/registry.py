"""Maps `data.name` to its loader, imported lazily so that, for example, tfds is only imported
when a tfds dataset is asked for."""

import importlib

from mhp_keras.data.base import OneClassData
from mhp_keras.errors import ConfigError

# name -> "module:function"; each function takes the full config and returns OneClassData.
DATASETS = {
    "digits": "mhp_keras.data.digits:load_digits",
    "textures": "mhp_keras.data.textures:load_textures",
    "tfds": "mhp_keras.data.tfds_source:load_tfds",
    "folders": "mhp_keras.data.folders:load_class_folders",
    "mvtec": "mhp_keras.data.mvtec:load_mvtec",
}


def load_data(config) -> OneClassData:
    """The one-class splits for `config.data.name`; a ConfigError lists the valid names."""
    name = config.data.name
    if name not in DATASETS:
        raise ConfigError(
            f"data.name={name!r} is not a known dataset: expected one of {sorted(DATASETS)}."
        )
    module_name, function_name = DATASETS[name].split(":")
    loader = getattr(importlib.import_module(module_name), function_name)
    return loader(config)
