"""CIFAR-10 with the paper's one-class protocol: one class normal, the other nine anomalous.

Uses tfds (`data.tfds_name` is cifar10 by default; `data.data_dir` for prepared data, else a
download). Eight hypotheses as in the paper's CIFAR-10 table; `--mode=benchmark_classes` runs every
class in turn.
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "tfds"
    c.data.normal_class = "airplane"  # or an index 0..9
    c.data.image_size = 32
    c.data.channels = 3
    c.data.batch_size = 64
    c.model.hypotheses = 8
    c.model.latent_dim = 64
    return c
