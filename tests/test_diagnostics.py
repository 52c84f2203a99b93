"""The mechanism diagnostics against closed forms on constructed heads and images."""

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.training import diagnostics as dg
from mhp_keras.training.mechanism_names import NAMES


def _constant_heads(values, size=4):
    """[1, K, size, size, 1] heads, head k constant at values[k]."""
    return np.stack([np.full((size, size, 1), v, np.float32) for v in values])[None]


def test_head_diversity_is_the_mean_pairwise_distance_over_the_best_heads_error():
    images = np.zeros((1, 4, 4, 1), np.float32)
    # Two heads 0.4 apart, the best one 0.1 off the image: 0.4 / 0.1.
    assert float(dg.head_diversity(images, _constant_heads([0.1, 0.5]), [0])) == pytest.approx(4)
    # Three heads: pairwise distances 0.2, 0.4, 0.2 (mean 0.8 / 3) over the best's 0.1.
    three = dg.head_diversity(images, _constant_heads([0.1, 0.3, 0.5]), [0])
    assert float(three) == pytest.approx((0.8 / 3) / 0.1, rel=1e-5)
    # The winner's error is the denominator: winner 1 is 0.3 off.
    assert float(dg.head_diversity(images, _constant_heads([0.1, 0.3, 0.5]), [1])) == (
        pytest.approx((0.8 / 3) / 0.3, rel=1e-5)
    )


def test_collapsed_heads_and_a_single_head_have_no_diversity():
    images = np.random.default_rng(0).random((3, 4, 4, 1)).astype(np.float32)
    same = np.repeat(images[:, None] * 0.9, 4, axis=1)
    assert float(dg.head_diversity(images, same, [0, 1, 2])) == 0.0
    assert float(dg.head_diversity(images, same[:, :1], [0, 0, 0])) == 0.0


def test_head_diversity_averages_over_images():
    images = np.zeros((2, 4, 4, 1), np.float32)
    heads = np.concatenate([_constant_heads([0.1, 0.5]), _constant_heads([0.2, 0.4])])
    # Image 0: 0.4 / 0.1 = 4; image 1: 0.2 / 0.2 = 1.
    assert float(dg.head_diversity(images, heads, [0, 0])) == pytest.approx(2.5)
    # Per image, against any best guess (the report's per-pixel one): 0.4 / 0.25, 0.2 / 0.25.
    best = np.full((2, 4, 4, 1), 0.25, np.float32)
    per_image = dg.per_image_head_diversity(images, heads, best).numpy()
    np.testing.assert_allclose(per_image, [1.6, 0.8], rtol=1e-5)
    np.testing.assert_array_equal(dg.per_image_head_diversity(images, heads[:, :1], best), [0, 0])


def test_effective_heads_is_exp_of_the_winner_shares_entropy():
    assert dg.effective_heads([0.5, 0.5]) == pytest.approx(2.0)
    assert dg.effective_heads([0.25] * 4) == pytest.approx(4.0)
    # One head wins everything (the others are dead): one head in use, however many there are.
    assert dg.effective_heads([1.0, 0.0, 0.0]) == pytest.approx(1.0)
    assert dg.effective_heads([0.7, 0.3]) == pytest.approx(1 / (0.7**0.7 * 0.3**0.3))
    # Shares that do not sum to one (a replica's rounding) are normalised.
    assert dg.effective_heads([2.0, 2.0]) == pytest.approx(2.0)
    assert dg.effective_heads([]) is None
    assert dg.head_shares({"win_0": 0.6, "win_1": 0.4, "loss": 1.0}) == [0.6, 0.4]
    assert dg.head_shares({"loss": 1.0, "win_0": None}) == []


def test_gradient_energy_of_a_step_edge():
    image = np.zeros((1, 4, 4, 1), np.float32)
    image[:, :, 2:] = 1.0  # one vertical edge of height 1 in each of the 4 rows
    assert float(dg.gradient_energy(image)[0]) == pytest.approx(4.0)
    assert float(dg.gradient_energy(np.transpose(image, (0, 2, 1, 3)))[0]) == pytest.approx(4.0)


def test_sharpness_compares_the_best_guess_with_the_input():
    rng = np.random.default_rng(1)
    images = rng.random((2, 8, 8, 3)).astype(np.float32)
    assert float(dg.sharpness(images, images)) == pytest.approx(1.0)
    assert float(dg.sharpness(images, 0.5 * images + 0.2)) == pytest.approx(0.25, rel=1e-5)
    flat = np.full_like(images, 0.5)
    assert float(dg.sharpness(images, flat)) == 0.0


def test_head_sharpness_is_each_heads_energy_over_the_inputs():
    rng = np.random.default_rng(5)
    images = rng.random((2, 8, 8, 1)).astype(np.float32)
    checker = (np.indices((8, 8)).sum(axis=0) % 2).astype(np.float32)[None, :, :, None]
    checker = np.repeat(checker, 2, axis=0)
    heads = np.stack([images, 0.5 * images + 0.2, checker], axis=1)  # [B, K=3, h, w, C]
    got = dg.head_sharpness(images, heads).numpy()
    # The checkerboard: every one of the 2 x 8 x 7 neighbouring pairs differs by 1.
    expected = 2 * (2 * 8 * 7) / sum(float(dg.gradient_energy(images)[i]) for i in range(2))
    np.testing.assert_allclose(got, [1.0, 0.25, expected], rtol=1e-5)
    assert got[2] > 2.0  # a pattern, far above its inputs' energy


def test_global_norm_skips_missing_gradients():
    grads = [tf.constant([3.0]), None, tf.constant([[4.0]])]
    assert float(dg.global_norm(grads)) == pytest.approx(5.0)
    assert float(dg.global_norm([None])) == 0.0


def test_the_last_shared_layer_feeds_the_heads():
    model = tiny_conad(seed=0)
    layer = dg.last_shared_layer(model.decoder)
    assert layer.name == "deconv_0"
    assert layer.output.shape == model.decoder.get_layer("hypotheses").input.shape


def _direct_share(model, images):
    """adv_grad_share computed independently: two separate tapes."""
    variables = dg.last_shared_layer(model.decoder).trainable_weights
    norms = []
    for term in ("recon", "g_adv"):
        with tf.GradientTape() as tape:
            out = model.per_sample_losses(images, training=False)
            weight = 1.0 if term == "recon" else model.adv_weight
            loss = weight * tf.reduce_mean(out[term])
        grads = tape.gradient(loss, variables)
        norms.append(np.sqrt(sum(float(tf.reduce_sum(g**2)) for g in grads)))
    return norms[1] / norms[0]


def test_the_callback_logs_all_three_each_epoch():
    images = np.random.default_rng(2).random((16, 16, 16, 1)).astype(np.float32)
    model = tiny_conad(seed=0, adv_weight=0.1)
    callback = dg.MechanismDiagnostics(images[:8])
    history = model.fit(images, epochs=2, batch_size=8, verbose=0, callbacks=[callback])
    for name in NAMES:
        assert len(history.history[name]) == 2
        assert np.isfinite(history.history[name]).all()
    assert history.history["adv_grad_share"][-1] > 0
    shares = [history.history[f"win_{k}"][-1] for k in range(model.hypotheses)]
    assert history.history["effective_heads"][-1] == pytest.approx(dg.effective_heads(shares))
    assert callback.measure()["adv_grad_share"] == pytest.approx(
        _direct_share(model, tf.constant(images[:8])), rel=1e-4
    )


def test_without_a_discriminator_the_share_is_zero():
    images = np.random.default_rng(3).random((8, 16, 16, 1)).astype(np.float32)
    model = tiny_conad(seed=0, adv_weight=0.0)
    model.fit(images, epochs=1, batch_size=8, verbose=0)
    callback = dg.MechanismDiagnostics(images)
    callback.set_model(model)
    assert callback.measure()["adv_grad_share"] == 0.0


def test_a_run_records_the_diagnostics_every_epoch(tmp_path, tiny_config):
    import csv
    import json

    from mhp_keras.training.experiment import run

    config = tiny_config(**{"train.epochs": 3, "train.jit_compile": "false"})
    metrics = run(config, str(tmp_path), "train_and_evaluate")
    with open(tmp_path / "history.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for name in NAMES:
        assert all(np.isfinite(float(row[name])) for row in rows)
    stored = json.loads((tmp_path / "metrics.json").read_text())["mechanism"]
    assert stored["epochs_measured"] == 3
    assert stored["adv_grad_share"] == pytest.approx(float(rows[-1]["adv_grad_share"]), rel=1e-5)
    assert metrics["mechanism"] == stored
