"""Shared pytest set-up: quiet TensorFlow, fixed seeds, a tiny config for fast end-to-end runs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

from mhp_keras.config.defaults import base_config  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    # Every test starts from float32: `experiment.set_up_runtime` sets the process-wide Keras
    # dtype policy (bfloat16 under mixed_precision=auto on a CPU with bfloat16), and a model a
    # later test built under it would compute in bfloat16.
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


def make_tiny_config(**overrides):
    """A digits config small enough that a full train + evaluate takes a few seconds."""
    c = base_config()
    c.data.name = "digits"
    c.data.image_size = 16
    c.data.channels = 1
    c.data.batch_size = 32
    c.data.max_train = 64
    c.model.hypotheses = 2
    c.model.latent_dim = 4
    c.model.base_filters = 8
    c.model.disc_base_filters = 8
    c.train.epochs = 2
    c.train.verbose = 0
    c.eval.report = False
    for key, value in overrides.items():
        section, name = key.split(".")
        c[section][name] = value
    return c


@pytest.fixture
def tiny_config():
    return make_tiny_config
