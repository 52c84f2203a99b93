"""The latent grid (`model.latent_cell_px`): its size, that each cell is a dense map of its own
block of the bottleneck (checked against numpy), that one cell is exactly the old dense latent,
and that models train, save and load with it, including models saved before it."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import TINY

from mhp_keras.config.defaults import base_config
from mhp_keras.config.validation import validate_config
from mhp_keras.errors import ConfigError
from mhp_keras.models import ConAD
from mhp_keras.models.shapes import latent_side
from mhp_keras.serving.export import METADATA_FILE, export_saved_model

SMALL = TINY | {"image_size": 64, "channels": 3, "latent_dim": 3, "base_filters": 4}


@pytest.mark.parametrize(("size", "side"), [(16, 1), (32, 1), (64, 2), (128, 4), (256, 8)])
def test_one_cell_per_cell_px(size, side):
    assert latent_side(size, 32) == side
    assert latent_side(size, 0) == 1
    assert latent_side(size, 8) == size // 8


def test_one_cell_is_the_dense_latent():
    """A 32 px image with 32 px cells is exactly the model every earlier release built."""
    cell, dense = (ConAD(**TINY | {"image_size": 32, "latent_cell_px": c}) for c in (32, 0))
    for a, b in ((cell.encoder, dense.encoder), (cell.decoder, dense.decoder)):
        assert [(w.path, w.shape) for w in a.weights] == [(w.path, w.shape) for w in b.weights]
    assert cell.z_dim == TINY["latent_dim"]


def bottleneck_of(encoder, name):
    return keras.Model(encoder.inputs[0], encoder.get_layer(name).output)


def test_each_cell_is_a_dense_map_of_its_own_block():
    keras.utils.set_random_seed(0)
    model = ConAD(**SMALL | {"latent_cell_px": 32})
    x = np.random.default_rng(0).random((2, 64, 64, 3)).astype("float32")
    mu, log_var = (t.numpy() for t in model.encoder(x))
    assert mu.shape == log_var.shape == (2, 2 * 2 * 3)
    features = bottleneck_of(model.encoder, "act_2")(x).numpy()  # [2, 8, 8, F]
    kernel, bias = (w.numpy() for w in model.encoder.get_layer("mu").weights)  # [4, 4, F, 3]
    for i in range(2):
        for j in range(2):
            block = features[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4, :].reshape(2, -1)
            expected = block @ kernel.reshape(-1, 3) + bias
            cell = (i * 2 + j) * 3  # z is the [2, 2, 3] grid flattened row by row
            np.testing.assert_allclose(mu[:, cell : cell + 3], expected, rtol=1e-4, atol=1e-5)


def test_each_cell_of_z_projects_to_its_own_block():
    keras.utils.set_random_seed(0)
    model = ConAD(**SMALL | {"latent_cell_px": 32})
    project = keras.Model(model.decoder.inputs[0], model.decoder.get_layer("project").output)
    z = np.random.default_rng(1).normal(size=(2, 12)).astype("float32")
    out = project(z).numpy()  # [2, 8, 8, F]
    kernel, bias = (w.numpy() for w in model.decoder.get_layer("project").weights)
    # Conv2DTranspose kernel [4, 4, F, latent]: output pixel (a, b) of a cell is z_cell . k[a, b].
    cells = z.reshape(2, 2, 2, 3)
    expected = np.einsum("nijl,abfl->niajbf", cells, kernel).reshape(2, 8, 8, -1) + bias
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_a_hidden_layer_per_cell():
    model = ConAD(**SMALL | {"latent_cell_px": 32, "dense_units": 5})
    x = np.zeros((2, 64, 64, 3), "float32")
    assert model.encoder.get_layer("dense").output.shape == (None, 2, 2, 5)
    assert [tuple(t.shape) for t in model.encoder(x)] == [(2, 12), (2, 12)]
    means, _ = model.decoder(model.encoder(x)[0])
    assert tuple(means.shape) == (2, SMALL["hypotheses"], 64, 64, 3)


@pytest.mark.parametrize("mixture", ["wta", "mdn"])
def test_trains_on_a_grid_and_saves(tmp_path, mixture):
    keras.utils.set_random_seed(0)
    model = ConAD(**SMALL | {"mixture": mixture, "latent_cell_px": 32})  # 2x2 cells
    assert model.latent_side == 2 and model.z_dim == 12
    model.compile()
    x = np.random.default_rng(0).random((8, 64, 64, 3)).astype("float32")
    history = model.fit(x, epochs=1, batch_size=4, verbose=0).history
    assert np.isfinite(history["loss"][0])
    path = str(tmp_path / "grid.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.latent_side == 2
    np.testing.assert_array_equal(model.score(x[:2])[0], loaded.score(x[:2])[0])


def test_the_serving_model_scores_a_grid_model_as_in_process(tmp_path):
    keras.utils.set_random_seed(0)
    model = ConAD(**SMALL | {"latent_cell_px": 16})  # 4x4 cells at 64 px
    path = export_saved_model(model, str(tmp_path))
    with open(os.path.join(path, METADATA_FILE)) as f:
        assert json.load(f)["latent_cells_a_side"] == 4
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    scores, maps = model.score(images.astype(np.float32) / 255)
    np.testing.assert_allclose(served["anomaly_score"].numpy(), scores, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(served["anomaly_map"].numpy(), maps, rtol=1e-5, atol=1e-4)


def test_models_saved_before_the_grid_keep_one_dense_latent():
    config = ConAD(**SMALL).get_config()
    del config["latent_cell_px"]
    old = ConAD.from_config(config)
    assert old.latent_side == 1 and old.z_dim == SMALL["latent_dim"]


@pytest.mark.parametrize("value", [3, -1, 4, 48])
def test_a_bad_cell_size_names_the_key(value):
    config = base_config()
    config.data.image_size = 64
    config.model.latent_cell_px = value
    with pytest.raises(ConfigError, match="model.latent_cell_px"):
        validate_config(config)
