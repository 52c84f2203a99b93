"""Hypotheses discrimination (`loss.adv_hypotheses="group"` and "views"): what D is shown, group
by group, and that a model trains with it. Checked against explicit numpy arrays."""

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
@pytest.mark.parametrize("mode", ["group", "views"])
@pytest.mark.parametrize("sources, d_inputs", [("every", 32), ("split", 16)])
def test_one_discriminator_call_takes_every_source_in_aligned_groups(sources, d_inputs, mode):
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses=mode, adv_sources=sources)
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


@pytest.mark.parametrize("mode", ["group", "views"])
def test_a_model_trains_with_hypotheses_discrimination(mode):
    images = np.random.default_rng(3).random((24, 16, 16, 1)).astype(np.float32)
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses=mode)
    history = model.fit(images, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["d_loss"]).all()
    assert np.isfinite(history.history["g_adv"]).all()


@pytest.mark.parametrize("mode", ["group", "views"])
@pytest.mark.parametrize("hypotheses, ok", [(1, False), (2, True)])
def test_group_needs_several_hypotheses(hypotheses, ok, mode):
    values = {"adv_hypotheses": mode, "hypotheses": hypotheses}
    problem = first_invalid(values)
    assert (problem is None) == ok
    if not ok:
        assert problem[0] == "adv_hypotheses" and "hypotheses >= 2" in problem[1]


@pytest.mark.parametrize("mode", ["group", "views"])
def test_hypotheses_discrimination_under_mixed_precision(mode):
    import keras

    keras.config.set_dtype_policy("mixed_bfloat16")  # conftest restores float32 afterwards
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses=mode)
    images = np.random.default_rng(4).random((8, 16, 16, 1)).astype(np.float32)
    out = objective.per_sample_losses(model, tf.constant(images), training=True)
    assert np.isfinite(out["d_loss"].numpy()).all()


def _numpy_window(image, offset, margin):
    padded = np.pad(image, [(margin, margin), (margin, margin), (0, 0)], mode="reflect")
    h, w = image.shape[:2]
    return padded[offset[0] : offset[0] + h, offset[1] : offset[1] + w]


def test_shifted_views_are_the_image_then_its_reflect_padded_windows():
    images = np.random.default_rng(5).random((2, 6, 5, 2)).astype(np.float32)
    offsets = np.array([[[0, 4], [2, 1]], [[4, 0], [3, 3]]], np.int32)  # [B, k - 1, 2]
    views = fakes.shifted_views(tf.constant(images), tf.constant(offsets), 2).numpy()
    assert views.shape == (6, 6, 5, 2)
    for b in range(2):
        np.testing.assert_array_equal(views[3 * b], images[b])
        for j in range(2):
            want = _numpy_window(images[b], offsets[b, j], 2)
            np.testing.assert_array_equal(views[3 * b + 1 + j], want)


@pytest.mark.parametrize("size, margin", [(16, 1), (32, 2), (64, 4), (256, 16)])
def test_views_shift_by_up_to_a_sixteenth_of_the_side(size, margin):
    assert fakes.view_margin(size) == margin


def test_view_offsets_cover_every_shift_but_none():
    model = tiny_conad(seed=0, hypotheses=3, adv_hypotheses="views")  # 16 px: margin 1
    offsets = fakes.view_offsets(model, 400, 3).numpy()
    assert offsets.shape == (400, 2, 2)
    cells = {tuple(o) for o in offsets.reshape(-1, 2)}
    every = {(r, c) for r in range(3) for c in range(3)}
    assert cells == every - {(1, 1)}  # all eight shifts, never the unshifted image


def test_real_groups_under_views_are_shifted_copies_of_one_image():
    model = tiny_conad(seed=0, hypotheses=3, adv_hypotheses="views")
    images = np.random.default_rng(6).random((4, 16, 16, 1)).astype(np.float32)
    groups = fakes.real_groups(model, tf.constant(images)).numpy().reshape(4, 3, 16, 16, 1)
    offsets = fakes.view_offsets(model, 4, 3).numpy()  # the same stateless draw
    for b in range(4):
        np.testing.assert_array_equal(groups[b, 0], images[b])
        for j in range(2):
            np.testing.assert_array_equal(
                groups[b, j + 1], _numpy_window(images[b], offsets[b, j], 1)
            )
    # "group" keeps K different images of the batch.
    rolled = fakes.real_groups(tiny_conad(seed=0, hypotheses=3, adv_hypotheses="group"), images)
    np.testing.assert_array_equal(rolled.numpy()[1], images[1])


def test_views_compute_the_discriminator_feature_within_each_group():
    model = tiny_conad(seed=0, hypotheses=3, adv_hypotheses="views")
    assert model.disc_group_size == 3
