"""The adversarial weight lambda of eq. (5): fixed, or adapted to a share of the NLL's gradient."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.training import balance, objective
from mhp_keras.training.diagnostics import global_norm

X = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float32)


def _norms(model, images, scale):
    """|grad NLL| and |grad scale * L_G| on the balance layer, by an independent tape."""
    variables = balance.balance_variables(model)
    with tf.GradientTape(persistent=True) as tape:
        out = objective.per_sample_losses(model, images, training=True)
        nll = tf.reduce_mean(out["recon"])
        adv = scale * tf.reduce_mean(out["g_adv"])
    return float(global_norm(tape.gradient(nll, variables))), float(
        global_norm(tape.gradient(adv, variables))
    )


def _scale(model, images):
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch(balance.balance_variables(model))
        out = objective.per_sample_losses(model, images, training=True)
        nll, g_adv = tf.reduce_mean(out["recon"]), tf.reduce_mean(out["g_adv"])
    return float(balance.adversarial_scale(model, tape, nll, g_adv))


@pytest.mark.parametrize("share", [0.05, 0.5])
def test_the_adaptive_scale_gives_d_that_share_of_the_nll_gradient(share):
    model = tiny_conad(seed=0, adv_weight=share)
    images = tf.constant(X)
    scale = _scale(model, images)
    nll_norm, adv_norm = _norms(model, images, scale)
    assert adv_norm / nll_norm == pytest.approx(share, rel=1e-3)


def test_the_fixed_balance_is_the_weight_itself():
    model = tiny_conad(seed=0, adv_weight=0.3, adv_balance="fixed")
    assert _scale(model, tf.constant(X)) == pytest.approx(0.3)


def test_a_d_without_gradient_meets_the_cap_not_infinity():
    model = tiny_conad(seed=0)
    variables = balance.balance_variables(model)
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch(variables)
        nll = tf.reduce_sum(variables[0])
        constant = tf.constant(2.0)  # no path to the variables: a zero gradient
    scale = balance.adversarial_scale(model, tape, nll, constant)
    assert float(scale) == balance.MAX_ADV_SCALE


def _assert_one_step_is_sgd_on_eq_5(model, lr):
    """One training step of `model` (compiled with SGD(lr), no clipping) moves every generator
    variable by -lr times the gradient of WTA + KL + lambda * L_G, lambda being the step's."""
    images = tf.constant(X)
    scale = _scale(model, images)
    variables = model.generator_variables
    with tf.GradientTape() as tape:
        out = objective.per_sample_losses(model, images, training=True, adv_scale=scale)
        loss = tf.reduce_mean(out["loss"])
    expected = [
        v.numpy() - lr * g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))
    ]
    logs = model.train_on_batch(X, return_dict=True)
    assert logs["adv_scale"] == pytest.approx(scale, rel=1e-4)
    for v, e in zip(variables, expected, strict=True):
        np.testing.assert_allclose(v.numpy(), e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("balance", ["fixed", "adaptive"])
@pytest.mark.parametrize("loss_scaled", [False, True])
def test_a_training_step_is_sgd_on_eq_5_with_that_lambda(balance, loss_scaled):
    """The step's two-target backward pass (and, for float16, loss scaling) is the gradient of
    WTA + KL + lambda * L_G: SGD moves every generator variable by -lr times it."""
    lr = 0.01
    model = tiny_conad(seed=1, adv_balance=balance, clip_norm=0.0, compile=False)
    g_opt = keras.optimizers.SGD(lr)
    if loss_scaled:
        g_opt = keras.optimizers.LossScaleOptimizer(g_opt, initial_scale=64.0)
    model.compile(g_optimizer=g_opt, d_optimizer=keras.optimizers.SGD(lr))
    _assert_one_step_is_sgd_on_eq_5(model, lr)


@pytest.mark.parametrize(
    "settings",
    [
        dict(hypotheses=3, adv_hypotheses="all"),
        dict(hypotheses=2, adv_hypotheses="views"),
        dict(hypotheses=3, adv_sources="split"),
        dict(hypotheses=3, fused_heads=False),
        dict(hypotheses=3, wta="pixel", eps=0.1),
        dict(hypotheses=2, mixture="mdn"),  # the mixer reads z: two whole backward passes
    ],
    ids=["all", "views", "split", "separate_heads", "pixel_relaxed", "mdn"],
)
def test_the_adaptive_step_is_sgd_on_eq_5_whatever_d_sees(settings):
    """The adaptive step joins the NLL's and L_G's gradients at the decoder trunk's features and
    takes the rest of the generator once: still exactly the gradient of WTA + KL + lambda * L_G,
    for every way D sees the hypotheses, both head layouts and the MDN's fallback."""
    lr = 0.01
    model = tiny_conad(seed=2, clip_norm=0.0, compile=False, **settings)
    model.compile(g_optimizer=keras.optimizers.SGD(lr), d_optimizer=keras.optimizers.SGD(lr))
    _assert_one_step_is_sgd_on_eq_5(model, lr)
