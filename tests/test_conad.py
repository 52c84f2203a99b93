"""ConAD's training step: WTA gradient isolation, eps relaxation, the paper's variants, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from model_helpers import head_gradients, tiny_conad

from mhp_keras.errors import DataError
from mhp_keras.models import ConAD
from mhp_keras.training import fakes, losses


def tiny(**kwargs):
    return tiny_conad(**({"hypotheses": 4} | kwargs))


def images(n=8, channels=1, seed=0):
    return np.random.default_rng(seed).random((n, 16, 16, channels)).astype("float32")


def test_losing_heads_get_exactly_zero_gradient():
    model = tiny(adv_weight=0.0, eps=0.0, hypotheses=4)
    grads, wins = head_gradients(model, images(n=2))
    assert (wins == 0).sum() >= 2  # two images, four heads: at least two heads win nothing
    assert np.all(grads[wins == 0] == 0.0)
    assert np.all(grads[wins > 0] > 0.0)


def test_eps_relaxation_reaches_the_losers():
    model = tiny(adv_weight=0.0, eps=0.1, hypotheses=4)
    grads, wins = head_gradients(model, images(n=2))
    assert (wins == 0).any()
    assert np.all(grads > 0.0)


def test_adversarial_training_reaches_every_head_eventually():
    # With adv_hypotheses="all" the discriminator criticises every head, winners or not.
    model = tiny(adv_weight=1.0, eps=0.0, hypotheses=4, adv_hypotheses="all")
    grads, wins = head_gradients(model, images(n=2))
    assert (wins == 0).any()
    assert np.all(grads > 0.0)


@pytest.mark.parametrize(
    "hypotheses,adv_weight,name",
    [(1, 0.0, "VAE"), (1, 0.1, "VAE-GAN"), (3, 0.0, "MHP-WTA"), (3, 0.1, "ConAD")],
)
def test_paper_variants_train_and_report_all_losses(hypotheses, adv_weight, name):
    model = tiny(hypotheses=hypotheses, adv_weight=adv_weight)
    history = model.fit(images(16), epochs=1, batch_size=8, verbose=0)
    expected = {"loss", "recon", "kl", "g_adv", "d_loss", "d_acc_real", "d_acc_fake"}
    expected |= {f"win_{k}" for k in range(hypotheses)}
    assert expected <= set(history.history), name
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    evaluated = model.evaluate(images(8, seed=1), batch_size=8, verbose=0, return_dict=True)
    assert expected <= set(evaluated)
    if adv_weight == 0:
        assert evaluated["d_loss"] == 0.0 and evaluated["g_adv"] == 0.0
        assert not any(
            v.trainable and v.path.startswith("discriminator") for v in model.d_optimizer.variables
        )
    else:
        assert evaluated["d_loss"] > 0.0
    win = sum(history.history[f"win_{k}"][-1] for k in range(hypotheses))
    assert win == pytest.approx(1.0, abs=1e-5)


def test_pixel_wta_trains_and_scores():
    model = tiny(wta="pixel", hypotheses=3)
    model.fit(images(16), epochs=1, batch_size=8, verbose=0)
    scores, maps = model.score(images(4))
    out = model.analyze(images(4))
    assert out["winner_index"].shape == (4, 16, 16)
    means, log_vars = model(images(4))
    nll = losses.gaussian_nll(images(4), means, log_vars).numpy()
    np.testing.assert_allclose(out["raw_map"], nll.min(1), rtol=1e-4, atol=1e-6)
    # The map for localization is the raw map blurred by image_size / 32 pixels.
    blurred = losses.smooth_map(nll.min(1), model.blur).numpy()
    np.testing.assert_allclose(maps, blurred, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scores, nll.min(1).sum((1, 2)), rtol=1e-4)


def test_tiny_fit_lowers_the_loss():
    keras.utils.set_random_seed(1)
    model = tiny(hypotheses=2, adv_weight=0.0)
    x = images(32)
    before = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)["loss"]
    model.fit(x, epochs=15, batch_size=16, verbose=0)
    after = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)["loss"]
    assert after < before - 0.1 * abs(before)


def test_score_uses_the_winning_head_and_aggregates():
    model = tiny(hypotheses=3, score_aggregate="topk_sum", topk_fraction=0.1)
    x = images(5)
    scores, maps = model.score(x, batch_size=2)
    means, log_vars = model(x)
    nll = losses.gaussian_nll(x, means, log_vars).numpy()
    winners = nll.sum((2, 3)).argmin(1)
    raw = nll[np.arange(5), winners]
    np.testing.assert_allclose(maps, losses.smooth_map(raw, 0.5), rtol=1e-4, atol=1e-5)
    # The score aggregates the unblurred WTA NLL: the paper's anomaly score.
    k = int(np.ceil(0.1 * 256))
    np.testing.assert_allclose(scores, np.sort(raw.reshape(5, -1), 1)[:, -k:].sum(1), rtol=1e-5)


def test_save_and_load_give_identical_scores(tmp_path):
    model = tiny(hypotheses=3)
    model.fit(images(16), epochs=1, batch_size=8, verbose=0)
    model.threshold.assign(123.5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = images(6, seed=2)
    np.testing.assert_array_equal(model.score(x)[0], loaded.score(x)[0])
    np.testing.assert_array_equal(model.score(x)[1], loaded.score(x)[1])
    assert float(loaded.threshold.numpy()) == 123.5
    assert loaded.get_config() == model.get_config()
    # Both optimizers come back with their state, so training can resume.
    assert (
        int(loaded.g_optimizer.iterations.numpy()) == int(model.g_optimizer.iterations.numpy()) == 2
    )
    assert int(loaded.d_optimizer.iterations.numpy()) == 2
    for a, b in zip(model.d_optimizer.variables, loaded.d_optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_models_saved_before_the_blocked_head_layout_load_interleaved():
    model = tiny(hypotheses=2)
    assert model.decoder.get_layer("hypotheses").channel_layout == "blocked"
    config = model.get_config()
    del config["head_channel_layout"]
    old = ConAD.from_config(config)
    assert old.decoder.get_layer("hypotheses").channel_layout == "interleaved"


def test_prior_fakes_use_each_images_own_head():
    model = tiny(hypotheses=3, adv_weight=0.1)
    z = np.random.default_rng(3).normal(size=(5, 4)).astype("float32")
    heads = tf.constant([2, 0, 1, 1, 0])
    decoded = fakes.prior_fakes(model, z, heads, training=False).numpy()
    means = model.decoder(z)[0].numpy()  # [B, K, h, w, C]
    np.testing.assert_allclose(decoded, means[np.arange(5), heads.numpy()], rtol=1e-5, atol=1e-6)


def test_score_rejects_bad_images():
    model = tiny()
    bad = images(3)
    bad[1, 2, 3, 0] = np.nan
    with pytest.raises(DataError, match=r"index \[1\].*NaN or Inf"):
        model.score(bad)
    with pytest.raises(DataError, match="3 channels"):
        model.score(images(2, channels=3))
    with pytest.raises(DataError, match="shape"):
        model.score(np.zeros((16, 16)))
    scores, maps = model.score(np.random.default_rng(0).random((2, 32, 32, 1)))  # resized
    assert maps.shape == (2, 16, 16)
