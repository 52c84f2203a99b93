"""Hypotheses discrimination (`loss.adv_hypotheses="group"`): what D is shown, group by group, and
that a model trains with it. Checked against explicit numpy arrays."""

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.config.model_settings import first_invalid
from mhp_keras.models.layers import MinibatchStdDev
from mhp_keras.training import fakes, objective


def test_rolled_groups_give_every_image_a_group_of_k_distinct_images():
    images = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((5, 2, 2, 1))
    groups = fakes.rolled_groups(tf.constant(images, tf.float32), 3).numpy()
    firsts = groups[:, 0, 0, 0].reshape(5, 3)
    np.testing.assert_array_equal(firsts, [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 0], [4, 0, 1]])


def test_the_fakes_of_one_input_are_its_k_hypotheses_side_by_side():
    model = tiny_conad(seed=0, hypotheses=3, adv_hypotheses="group")
    means = np.random.default_rng(0).random((2, 16, 16, 1, 3)).astype(np.float32)  # native
    picked = fakes.pick_fakes(model, tf.constant(means), None).numpy()
    assert picked.shape == (6, 16, 16, 1)
    for image in range(2):
        for head in range(3):
            np.testing.assert_array_equal(picked[image * 3 + head], means[image, ..., head])


def test_the_discriminator_computes_its_feature_within_each_group():
    model = tiny_conad(seed=0, hypotheses=3, adv_hypotheses="group")
    assert model.disc_group_size == 3
    assert model.discriminator.get_layer("minibatch_std").group_size == 3
    # Default ("sample") keeps the batch-wide statistic.
    assert tiny_conad(seed=0).discriminator.get_layer("minibatch_std").group_size == 0


def test_collapsed_hypotheses_get_a_zero_group_feature_and_real_groups_do_not():
    layer = MinibatchStdDev(group_size=3)
    rng = np.random.default_rng(1)
    collapsed = np.repeat(rng.random((1, 4, 4, 2)), 3, axis=0)  # one input's identical heads
    real = rng.random((3, 4, 4, 2))  # three different real images
    out = layer(np.concatenate([collapsed, real]).astype(np.float32)).numpy()[..., -1]
    assert out[:3].max() < 1e-3 and out[3:].min() > 0.1


# 4 images, K = 2: 8 real images in groups; "every": 8 prior, 8 posterior and 8 rolled
# best-guess fakes; "split" (rows 0 | 1 | 2-3): 2 prior, 2 posterior, 2 x 2 best-guess fakes.
@pytest.mark.parametrize("sources, d_inputs", [("every", 32), ("split", 16)])
def test_one_discriminator_call_takes_every_source_in_aligned_groups(sources, d_inputs):
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses="group", adv_sources=sources)
    seen = []
    original = model.discriminator.call

    def recording(inputs, *args, **kwargs):
        seen.append(tuple(inputs.shape))
        return original(inputs, *args, **kwargs)

    model.discriminator.call = recording
    images = np.random.default_rng(2).random((4, 16, 16, 1)).astype(np.float32)
    out = objective.per_sample_losses(model, tf.constant(images), training=False)
    assert seen == [(d_inputs, 16, 16, 1)]
    for name in ("d_loss", "g_adv", "d_acc_real", "d_acc_fake"):
        assert out[name].shape == (4,) and np.isfinite(out[name].numpy()).all()


def test_a_model_trains_with_hypotheses_discrimination():
    images = np.random.default_rng(3).random((24, 16, 16, 1)).astype(np.float32)
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses="group")
    history = model.fit(images, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["d_loss"]).all()
    assert np.isfinite(history.history["g_adv"]).all()


@pytest.mark.parametrize("hypotheses, ok", [(1, False), (2, True)])
def test_group_needs_several_hypotheses(hypotheses, ok):
    values = {"adv_hypotheses": "group", "hypotheses": hypotheses}
    problem = first_invalid(values)
    assert (problem is None) == ok
    if not ok:
        assert problem[0] == "adv_hypotheses" and "hypotheses >= 2" in problem[1]


def test_hypotheses_discrimination_under_mixed_precision():
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses="group")
    images = np.random.default_rng(4).random((8, 16, 16, 1)).astype(np.float32)
    out = objective.per_sample_losses(model, tf.constant(images), training=True)
    assert np.isfinite(out["d_loss"].numpy()).all()
