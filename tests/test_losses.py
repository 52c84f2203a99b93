"""The numerical core against numpy closed forms: NLL, KL, WTA weights, maps and aggregation."""

import inspect
import math

import numpy as np
import pytest
import tensorflow as tf

from mhp_keras.training import losses


def _data(b=3, k=4, h=5, w=6, c=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((b, h, w, c)).astype(np.float32)
    mean = rng.random((b, k, h, w, c)).astype(np.float32)
    log_var = rng.uniform(-3, 1, (b, k, h, w, c)).astype(np.float32)
    return x, mean, log_var


def _np_nll(x, mean, log_var):
    var = np.exp(log_var.astype(np.float64))
    diff = x[:, None].astype(np.float64) - mean
    return (0.5 * np.log(2 * np.pi * var) + diff**2 / (2 * var)).sum(-1)


def test_gaussian_nll_matches_closed_form():
    x, mean, log_var = _data()
    got = losses.gaussian_nll(x, mean, log_var).numpy()
    np.testing.assert_allclose(got, _np_nll(x, mean, log_var), rtol=1e-5, atol=1e-5)
    # A standard normal at its mean: 0.5 * log(2 pi) per channel.
    zero = losses.gaussian_nll(
        np.zeros((1, 1, 1, 1)), np.zeros((1, 1, 1, 1, 1)), np.zeros((1, 1, 1, 1, 1))
    )
    assert zero.numpy().item() == pytest.approx(0.5 * math.log(2 * math.pi), rel=1e-6)


def test_nll_and_best_guess_in_the_native_layout():
    x, mean, log_var = _data(seed=7)
    # [B, K, h, w, C] -> the decoder's native [B, h, w, C, K].
    native_mean, native_log_var = np.moveaxis(mean, 1, 4), np.moveaxis(log_var, 1, 4)
    nll = losses.gaussian_nll(x, native_mean, native_log_var, head_axis=4).numpy()
    expected = _np_nll(x, mean, log_var)
    np.testing.assert_allclose(np.moveaxis(nll, 3, 1), expected, rtol=1e-5, atol=1e-5)
    nll_heads_first = tf.constant(np.moveaxis(nll, 3, 1))
    for mode in ("sample", "pixel"):
        np.testing.assert_array_equal(
            losses.best_hypothesis(native_mean, nll_heads_first, mode, head_axis=4).numpy(),
            losses.best_hypothesis(mean, nll_heads_first, mode).numpy(),
        )


def test_kl_matches_closed_form():
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(4, 7)).astype(np.float32)
    log_var = rng.normal(size=(4, 7)).astype(np.float32)
    var = np.exp(log_var.astype(np.float64))
    # KL(N(mu, var) || N(0, 1)) = 0.5 * (var + mu^2 - 1 - log var), summed over dimensions.
    expected = 0.5 * (var + mu.astype(np.float64) ** 2 - 1 - log_var).sum(-1)
    np.testing.assert_allclose(
        losses.kl_to_standard_normal(mu, log_var).numpy(), expected, rtol=1e-5
    )
    assert losses.kl_to_standard_normal(np.zeros((1, 3)), np.zeros((1, 3))).numpy().item() == 0.0


def test_sample_winner_mask_and_loss():
    x, mean, log_var = _data()
    nll = _np_nll(x, mean, log_var)
    per_head = nll.sum((2, 3))
    winners = per_head.argmin(1)
    eps = 0.2
    mask = losses.winner_mask(tf.constant(nll, tf.float32), "sample", eps).numpy()
    k = nll.shape[1]
    for b in range(len(x)):
        for j in range(k):
            expected = 1 - eps if j == winners[b] else eps / (k - 1)
            np.testing.assert_allclose(mask[b, j], expected, rtol=1e-6)
    loss = losses.wta_loss(tf.constant(nll, tf.float32), "sample", 0.0).numpy()
    np.testing.assert_allclose(loss, per_head.min(1), rtol=1e-5)


def test_pixel_winner_mask_and_loss():
    x, mean, log_var = _data(seed=3)
    nll = _np_nll(x, mean, log_var)
    loss = losses.wta_loss(tf.constant(nll, tf.float32), "pixel", 0.0).numpy()
    np.testing.assert_allclose(loss, nll.min(1).sum((1, 2)), rtol=1e-5)
    winners = losses.winner_index(tf.constant(nll, tf.float32), "pixel").numpy()
    np.testing.assert_array_equal(winners, nll.argmin(1))


def test_single_hypothesis_gets_full_weight_even_with_eps():
    nll = tf.random.uniform((2, 1, 3, 3))
    np.testing.assert_array_equal(losses.winner_mask(nll, "sample", 0.3).numpy(), 1.0)


def test_anomaly_map_and_best_hypothesis():
    x, mean, log_var = _data(seed=4)
    nll = _np_nll(x, mean, log_var)
    winners = nll.sum((2, 3)).argmin(1)
    amap = losses.anomaly_map(tf.constant(nll, tf.float32), "sample").numpy()
    np.testing.assert_allclose(amap, nll[np.arange(len(x)), winners], rtol=1e-5)
    best = losses.best_hypothesis(mean, tf.constant(nll, tf.float32), "sample").numpy()
    np.testing.assert_array_equal(best, mean[np.arange(len(x)), winners])
    np.testing.assert_allclose(
        losses.anomaly_map(tf.constant(nll, tf.float32), "pixel").numpy(), nll.min(1), rtol=1e-5
    )
    best_pixel = losses.best_hypothesis(mean, tf.constant(nll, tf.float32), "pixel").numpy()
    idx = nll.argmin(1)
    expected = np.take_along_axis(mean, idx[:, None, :, :, None], axis=1)[:, 0]
    np.testing.assert_array_equal(best_pixel, expected)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0, 0.001])
def test_topk_aggregation_matches_numpy(fraction):
    amap = np.random.default_rng(5).random((4, 8, 8)).astype(np.float32)
    got = losses.aggregate_map(amap, "topk_sum", fraction).numpy()
    k = max(1, math.ceil(64 * fraction))
    expected = np.sort(amap.reshape(4, -1), axis=1)[:, -k:].sum(1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sum_and_mean_aggregation():
    amap = np.random.default_rng(6).random((3, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(
        losses.aggregate_map(amap, "sum", 0.1).numpy(), amap.sum((1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        losses.aggregate_map(amap, "mean", 0.1).numpy(), amap.mean((1, 2)), rtol=1e-5
    )
    with pytest.raises(ValueError, match="method='median'"):
        losses.aggregate_map(amap, "median", 0.1)


def test_smooth_map_matches_scipy_gaussian_filter():
    from scipy import ndimage

    amap = np.random.default_rng(7).random((2, 12, 9)).astype(np.float32)
    for sigma in (0.5, 1.0, 2.0):
        # scipy rounds the radius as int(truncate * sigma + 0.5); ours is ceil(3 * sigma).
        radius = max(1, int(np.ceil(3 * sigma)))
        expected = np.stack(
            [
                ndimage.gaussian_filter(m, sigma, mode="reflect", truncate=radius / sigma)
                for m in amap
            ]
        )
        np.testing.assert_allclose(losses.smooth_map(amap, sigma).numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(losses.smooth_map(amap, 0.0), amap)


def test_posterior_log_variance_is_bounded_smoothly():
    x = np.array([-1e4, -20.0, -1.0, 0.0, 0.5, 4.0, 1e4], np.float32)
    got = losses.bounded_log_var(x).numpy()
    np.testing.assert_allclose(got, 8.0 * np.tanh(x / 8.0), rtol=1e-6)
    assert np.all(np.abs(got) < 8.0 + 1e-6) and np.all(np.diff(got) > 0)
    # Almost the identity where a healthy posterior lives.
    np.testing.assert_allclose(got[2:5], x[2:5], atol=6e-3)
    # So the KL stays finite where an unbounded exp() would overflow.
    kl = losses.kl_to_standard_normal(np.zeros((1, 7), np.float32), got[None]).numpy()
    assert np.isfinite(kl).all()


def test_settings_the_config_owns_have_no_restated_defaults():
    # The WTA mode, eps and the score aggregation come from the config (loss.*, score.*) only.
    for fn, names in [
        (losses.winner_mask, ("mode", "eps")),
        (losses.wta_loss, ("mode", "eps")),
        (losses.winner_index, ("mode",)),
        (losses.anomaly_map, ("mode",)),
        (losses.best_hypothesis, ("mode",)),
        (losses.aggregate_map, ("method", "topk_fraction")),
    ]:
        parameters = inspect.signature(fn).parameters
        for name in names:
            assert parameters[name].default is inspect.Parameter.empty, (fn.__name__, name)
