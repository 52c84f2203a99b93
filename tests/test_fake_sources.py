"""`loss.adv_sources`: which rows of a batch give D which fake source, and that the per-sample
adversarial losses are each row's own source's cross-entropy. Checked against numpy."""

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import tiny_conad

from mhp_keras.training import fakes, objective


def softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize(
    "batch, expected",
    [
        (6, [(0, 2), (2, 4), (4, 6)]),
        (7, [(0, 2), (2, 4), (4, 7)]),
        (2, [(0, 1), (0, 1), (1, 2)]),  # tiny batches share rows: no source is empty
        (1, [(0, 1), (0, 1), (0, 1)]),
    ],
)
def test_split_gives_each_source_a_third_of_the_rows(batch, expected):
    model = tiny_conad(seed=0, compile=False, adv_sources="split")
    bounds = fakes.source_rows(model, tf.constant(batch))
    assert [(int(a), int(b)) for a, b in bounds] == expected


def test_every_gives_every_row_all_three_sources():
    assert fakes.source_rows(tiny_conad(seed=0, compile=False, adv_sources="every"), 6) is None


def recorded_losses(model, images):
    """per_sample_losses with D's inputs and logits recorded, call by call."""
    calls = []
    original = model.discriminator.call

    def recording(inputs, *args, **kwargs):
        logits = original(inputs, *args, **kwargs)
        calls.append((np.asarray(inputs), np.asarray(logits).reshape(-1)))
        return logits

    model.discriminator.call = recording
    out = objective.per_sample_losses(model, tf.constant(images), training=False)
    return {k: v.numpy() for k, v in out.items()}, calls


@pytest.mark.parametrize("batch", [6, 2, 1])
def test_split_losses_are_each_rows_own_source(batch):
    model = tiny_conad(seed=0, hypotheses=3, adv_sources="split")
    images = np.random.default_rng(1).random((batch, 16, 16, 1)).astype(np.float32)
    out, calls = recorded_losses(model, images)
    (real_in, real), *fake_calls = calls
    np.testing.assert_array_equal(real_in, images)
    bounds = [(int(a), int(b)) for a, b in fakes.source_rows(model, batch)]
    assert [len(f[1]) for f in fake_calls] == [b - a for a, b in bounds]
    # Each row's fake terms: the mean over the sources that cover it (one, unless tiny).
    total, count = np.zeros(batch), np.zeros(batch)
    g_total, right = np.zeros(batch), np.zeros(batch)
    for (start, stop), (_, logits) in zip(bounds, fake_calls):
        total[start:stop] += softplus(logits)
        g_total[start:stop] += softplus(-logits)
        right[start:stop] += logits < 0
        count[start:stop] += 1
    np.testing.assert_allclose(out["d_loss"], softplus(-real) + total / count, rtol=1e-5)
    np.testing.assert_allclose(out["g_adv"], g_total / count, rtol=1e-5)
    np.testing.assert_allclose(out["d_acc_real"], real > 0)
    np.testing.assert_allclose(out["d_acc_fake"], right / count)


def test_split_with_every_head_gives_d_k_fakes_per_posterior_and_prior_row():
    model = tiny_conad(seed=0, hypotheses=2, adv_hypotheses="all", adv_sources="split")
    images = np.random.default_rng(2).random((6, 16, 16, 1)).astype(np.float32)
    out, calls = recorded_losses(model, images)
    # real 6; prior and posterior thirds: 2 rows x 2 heads; best guesses: 2 rows x 1.
    assert [len(c[1]) for c in calls] == [6, 2 * 2, 2 * 2, 2]
    (_, real), *fake_calls = calls
    per_row = np.concatenate(
        [
            softplus(fake_calls[0][1]).reshape(2, 2).mean(1),
            softplus(fake_calls[1][1]).reshape(2, 2).mean(1),
            softplus(fake_calls[2][1]),
        ]
    )
    np.testing.assert_allclose(out["d_loss"], softplus(-real) + per_row, rtol=1e-5)


def test_every_averages_the_three_sources_per_row():
    model = tiny_conad(seed=0, hypotheses=2, adv_sources="every")
    images = np.random.default_rng(3).random((4, 16, 16, 1)).astype(np.float32)
    out, calls = recorded_losses(model, images)
    (_, real), *fake_calls = calls
    assert [len(f[1]) for f in fake_calls] == [4, 4, 4]
    fake_d = np.mean([softplus(f[1]) for f in fake_calls], axis=0)
    np.testing.assert_allclose(out["d_loss"], softplus(-real) + fake_d, rtol=1e-5)


def test_a_model_trains_on_batches_with_a_remainder_of_one():
    images = np.random.default_rng(4).random((9, 16, 16, 1)).astype(np.float32)
    history = tiny_conad(seed=0, adv_sources="split").fit(images, epochs=1, batch_size=4, verbose=0)
    assert np.isfinite(history.history["d_loss"]).all()
