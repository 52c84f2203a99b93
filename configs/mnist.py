"""MNIST with the paper's one-class protocol: one digit normal, the other nine anomalous.

Uses tfds (`data.data_dir`; prepared data or a download); the 28x28 digits are resized to 32x32.
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "tfds"
    c.data.tfds_name = "mnist"
    c.data.normal_class = "0"
    c.data.image_size = 32
    c.data.channels = 1
    c.data.batch_size = 64
    c.model.hypotheses = 8
    c.model.latent_dim = 16
    c.model.base_filters = 32
    c.model.disc_base_filters = 32
    c.train.epochs = 30
    return c
