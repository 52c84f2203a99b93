"""Offline default: scikit-learn's bundled 8x8 handwritten digits, one digit normal.

Runs anywhere with no download, in minutes on two CPU cores (times: docs/results.md). The data
keys (digits, digit 0 normal, 16 px grey, batch 32) and H=4 are `base_config()`'s own defaults,
so only the model's size and the training length are set here.
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.model.latent_dim = 8
    c.train.epochs = 60
    return c
