"""`MinibatchDiscrimination` (`model.minibatch_kernels`): Salimans et al.'s learnt closeness
features, computed within each group of one input's hypotheses, checked against numpy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.config.legacy import changed_keys
from mhp_keras.config.model_settings import first_invalid
from mhp_keras.models.layers import MinibatchDiscrimination
from mhp_keras.training import objective


def closeness(features, projection, kernels, dims, group):
    """The feature by its definition: per kernel, the mean over the group's other images of
    exp(-L1 distance) between their projections."""
    m = (features @ projection).reshape(len(features), kernels, dims)
    out = np.zeros((len(features), kernels))
    for i in range(len(features)):
        first = i - i % group
        others = [j for j in range(first, first + group) if j != i]
        for k in range(kernels):
            out[i, k] = np.mean([np.exp(-np.abs(m[i, k] - m[j, k]).sum()) for j in others])
    return out


@pytest.mark.parametrize("group_size, group", [(3, 3), (0, 6)])
def test_closeness_matches_its_definition(group_size, group):
    x = np.random.default_rng(0).normal(size=(6, 10)).astype(np.float32)
    layer = MinibatchDiscrimination(4, dims=2, group_size=group_size)
    out = layer(x).numpy()
    assert out.shape == (6, 14)
    np.testing.assert_array_equal(out[:, :10], x)
    expected = closeness(x, layer.projection.numpy(), 4, 2, group)
    np.testing.assert_allclose(out[:, 10:], expected, rtol=1e-5, atol=1e-6)


def test_identical_hypotheses_look_identical_and_other_groups_do_not_matter():
    rng = np.random.default_rng(1)
    collapsed = np.repeat(rng.normal(size=(1, 8)), 2, axis=0)  # one input's identical heads
    layer = MinibatchDiscrimination(3, group_size=2)
    a = layer(np.concatenate([collapsed, rng.normal(size=(2, 8))]).astype(np.float32)).numpy()
    b = layer(np.concatenate([collapsed, rng.normal(size=(2, 8))]).astype(np.float32)).numpy()
    np.testing.assert_allclose(a[:2, 8:], 1.0, rtol=1e-6)  # exp(0) for every kernel
    np.testing.assert_array_equal(a[:2], b[:2])  # the second group never reaches the first
    assert a[2:, 8:].max() < 1.0


def test_the_layer_serialises():
    layer = MinibatchDiscrimination(5, dims=3, group_size=2, name="mbd")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, MinibatchDiscrimination)
    assert (restored.kernels, restored.dims, restored.group_size) == (5, 3, 2)


def test_the_discriminator_gets_the_features_within_each_group():
    model = tiny_conad(seed=0, hypotheses=3, adv_hypotheses="group", minibatch_kernels=4)
    layer = model.discriminator.get_layer("minibatch_disc")
    assert (layer.kernels, layer.group_size) == (4, 3)
    assert model.get_config()["minibatch_kernels"] == 4
    plain = tiny_conad(seed=0, hypotheses=3, adv_hypotheses="group")
    assert "minibatch_disc" not in [layer.name for layer in plain.discriminator.layers]
    # Without groups the features are computed over the whole batch.
    batch = tiny_conad(seed=0, hypotheses=3, minibatch_kernels=4)
    assert batch.discriminator.get_layer("minibatch_disc").group_size == 0


def test_a_model_with_the_features_trains_and_survives_a_save(tmp_path):
    images = np.random.default_rng(3).random((16, 16, 16, 1)).astype(np.float32)
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses="group", minibatch_kernels=4)
    history = model.fit(images, epochs=1, batch_size=8, verbose=0)
    assert np.isfinite(history.history["d_loss"]).all()
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    x = tf.constant(images[:4])
    np.testing.assert_allclose(
        restored.discriminator(x).numpy(), model.discriminator(x).numpy(), rtol=1e-5, atol=1e-6
    )


def test_the_features_under_mixed_precision():
    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses="group", minibatch_kernels=4)
    images = np.random.default_rng(4).random((8, 16, 16, 1)).astype(np.float32)
    out = objective.per_sample_losses(model, tf.constant(images), training=True)
    assert np.isfinite(out["d_loss"].numpy()).all()


@pytest.mark.parametrize("value, ok", [(0, True), (16, True), (-1, False), (2.5, False)])
def test_the_setting_is_a_count(value, ok):
    assert (first_invalid({"minibatch_kernels": value}) is None) == ok


def test_runs_made_before_the_setting_had_no_features():
    stored = {"model": {"hypotheses": 2}}
    assert changed_keys(stored, {"model": {"hypotheses": 2, "minibatch_kernels": 0}}) == []
    assert changed_keys(stored, {"model": {"hypotheses": 2, "minibatch_kernels": 8}}) == [
        "model.minibatch_kernels"
    ]
