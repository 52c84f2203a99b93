"""MDN-H: the mixture NLL, its map and its scores against numpy closed forms."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.models import ConAD
from mhp_keras.training import mixture


def _logsumexp(a, axis):
    top = a.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(a - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def _random_terms(seed=0, b=3, k=4, h=5, w=6):
    rng = np.random.default_rng(seed)
    nll = rng.normal(0.0, 0.3, (b, k, h, w)).astype(np.float32)
    logits = rng.normal(0.0, 1.0, (b, k)).astype(np.float32)
    log_pi = logits - _logsumexp(logits, 1)[:, None]
    return nll, log_pi


def test_mixture_nll_is_minus_logsumexp_of_log_pi_minus_the_heads_nll():
    nll, log_pi = _random_terms()
    expected = -_logsumexp(log_pi - nll.sum(axis=(2, 3)), 1)
    got = mixture.mixture_nll(tf.constant(nll), tf.constant(log_pi)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_the_map_sums_to_the_mixture_nll_with_the_kl_remainder():
    nll, log_pi = _random_terms(1)
    nll_t, log_pi_t = tf.constant(nll), tf.constant(log_pi)
    r = mixture.responsibilities(nll_t, log_pi_t).numpy()
    np.testing.assert_allclose(r.sum(axis=1), 1.0, rtol=1e-6)
    joint = log_pi - nll.sum(axis=(2, 3))
    np.testing.assert_allclose(r, np.exp(joint - _logsumexp(joint, 1)[:, None]), rtol=1e-5)
    np.testing.assert_array_equal(mixture.responsible_head(nll_t, log_pi_t), joint.argmax(1))
    amap = mixture.mixture_map(nll_t, log_pi_t).numpy()
    np.testing.assert_allclose(amap, np.einsum("bk,bkhw->bhw", r, nll), rtol=1e-5, atol=1e-6)
    remainder = mixture.mixture_remainder(nll_t, log_pi_t).numpy()
    assert (remainder >= -1e-6).all()  # a KL divergence
    total = amap.sum(axis=(1, 2)) + remainder
    np.testing.assert_allclose(total, mixture.mixture_nll(nll_t, log_pi_t), rtol=1e-4)


def _numpy_mixture_nll(model, x):
    mu, _ = model.encoder(x)
    means, log_vars = (t.numpy().astype(np.float64) for t in model.decoder(mu))
    per_pixel = 0.5 * (np.log(2 * np.pi) + log_vars + (x[:, None] - means) ** 2 / np.exp(log_vars))
    logits = model.mixer(mu).numpy().astype(np.float64)
    log_pi = logits - _logsumexp(logits, 1)[:, None]
    return -_logsumexp(log_pi - per_pixel.sum(axis=(2, 3, 4)), 1)


def test_an_mdn_model_trains_and_its_summed_score_is_the_mixture_nll(tmp_path):
    x = np.random.default_rng(0).random((16, 16, 16, 1)).astype(np.float32)
    model = tiny_conad(seed=0, hypotheses=3, mixture="mdn")
    history = model.fit(x, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    shares = [history.history[f"win_{k}"][-1] for k in range(3)]
    assert sum(shares) == pytest.approx(1.0, abs=1e-5)  # the responsibilities
    scores, _ = model.score(x)
    np.testing.assert_allclose(scores, _numpy_mixture_nll(model, x), rtol=1e-4)
    model.save(tmp_path / "mdn.keras")
    loaded = keras.models.load_model(tmp_path / "mdn.keras")
    np.testing.assert_allclose(loaded.score(x)[0], scores, rtol=1e-6)


def test_only_mdn_models_have_mixing_weights():
    assert tiny_conad(compile=False).mixer is None
    mdn = tiny_conad(compile=False, hypotheses=3, mixture="mdn")
    assert mdn.mixer.kernel.shape == (4, 3)
    assert any(v is mdn.mixer.kernel for v in mdn.generator_variables)


def test_mdn_needs_per_image_winners():
    with pytest.raises(ValueError, match="mixture='mdn'.*wta='sample'"):
        ConAD(mixture="mdn", wta="pixel")
