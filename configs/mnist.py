"""MNIST with the paper's one-class protocol: one digit normal, the other nine anomalous.

Uses tfds (`data.data_dir`; prepared data or a download); the 28x28 digits are resized to 32x32.
Digit 0 is normal unless `--config.data.normal_class` says otherwise.
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "tfds"
    c.data.tfds_name = "mnist"
    c.data.image_size = 32
    c.data.batch_size = 64
    c.model.hypotheses = 8
    c.train.epochs = 30
    return c
