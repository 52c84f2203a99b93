"""Offline default: scikit-learn's bundled 8x8 handwritten digits, one digit normal.

Runs anywhere with no download in well under three minutes on two CPU cores.
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "digits"
    c.data.normal_class = "0"
    c.data.image_size = 16
    c.data.channels = 1
    c.data.batch_size = 32
    c.model.hypotheses = 4
    c.model.latent_dim = 8
    c.model.base_filters = 32
    c.train.epochs = 60
    return c
