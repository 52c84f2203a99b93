"""The evolving WTA: its schedule, the top-k loss against numpy, the gradient it gives each head,
the callback in `fit`, and its setting."""

import numpy as np
import pytest
import tensorflow as tf
from model_helpers import head_gradients, tiny_conad

from mhp_keras.config import legacy
from mhp_keras.config.defaults import base_config
from mhp_keras.config.validation import validate_config
from mhp_keras.errors import ConfigError
from mhp_keras.training import losses
from mhp_keras.training.evolving_wta import EvolvingWTA, top_k_at


@pytest.mark.parametrize(
    "heads, epochs, expected",
    [
        (8, 10, [8, 8, 8, 8, 4, 4, 4, 2, 2, 2, 1, 1]),  # three halvings over 10 epochs
        (2, 4, [2, 2, 2, 2, 1, 1]),
        (3, 4, [3, 3, 2, 2, 1]),  # halving rounds up
        (4, 0, [1, 1, 1]),  # off
        (1, 5, [1, 1]),  # one head has nothing to share
    ],
)
def test_schedule_halves_from_every_head_to_the_wta(heads, epochs, expected):
    assert [top_k_at(e, epochs, heads) for e in range(len(expected))] == expected


def numpy_top_k_loss(nll, mode, eps, top_k):
    """The loss by its definition: the top_k lowest heads share 1 - eps, the others eps."""
    b, k = nll.shape[:2]
    scores = nll.sum(axis=(2, 3)) if mode == "sample" else nll
    order = np.argsort(scores, axis=1, kind="stable")
    ranks = np.argsort(order, axis=1, kind="stable")
    top = min(top_k, k)
    if top == k:
        weights = np.full(scores.shape, 1.0 / k)
    else:
        weights = np.where(ranks < top, (1.0 - eps) / top, eps / (k - top))
    if mode == "sample":
        return (weights * scores).sum(axis=1)
    return (weights * nll).sum(axis=(1, 2, 3))


@pytest.mark.parametrize("mode", ["sample", "pixel"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("top_k", [1, 2, 3, 4, 6])
def test_top_k_loss_matches_numpy(mode, eps, top_k):
    nll = np.random.default_rng(top_k).normal(size=(5, 4, 3, 3)).astype("float32")
    got = losses.wta_loss(tf.constant(nll), mode, eps, top_k).numpy()
    np.testing.assert_allclose(got, numpy_top_k_loss(nll, mode, eps, top_k), rtol=1e-5, atol=1e-5)


def test_top_k_of_one_is_the_wta_with_ties_to_the_lower_head():
    nll = np.zeros((1, 3, 2, 2), "float32")  # every head ties
    weights = losses.winner_mask(tf.constant(nll), "sample", 0.0, 1).numpy()[0, :, 0, 0]
    np.testing.assert_array_equal(weights, [1.0, 0.0, 0.0])
    weights = losses.winner_mask(tf.constant(nll), "sample", 0.0, 2).numpy()[0, :, 0, 0]
    np.testing.assert_array_equal(weights, [0.5, 0.5, 0.0])


@pytest.mark.parametrize("top_k, moving", [(1, 1), (2, 2), (4, 4)])
def test_exactly_the_top_k_heads_learn_under_the_hard_wta(top_k, moving):
    x = np.random.default_rng(0).random((1, 16, 16, 1)).astype("float32")
    model = tiny_conad(seed=0, hypotheses=4, eps=0.0, adv_weight=0.0)
    model.wta_top_k = top_k
    grads, _ = head_gradients(model, x)
    assert (grads > 0).sum() == moving


def test_callback_sets_k_per_epoch_logs_it_and_hands_back_the_wta():
    x = np.random.default_rng(1).random((8, 16, 16, 1)).astype("float32")
    model = tiny_conad(seed=0, hypotheses=4, eps=0.0, adv_weight=0.0)
    history = model.fit(x, epochs=4, batch_size=4, verbose=0, callbacks=[EvolvingWTA(2)])
    assert history.history["wta_top_k"] == [4.0, 2.0, 1.0, 1.0]
    assert model.wta_top_k == 1
    # A fit that ends while k > 1 hands back the WTA, and its k-traced step is dropped.
    model.fit(x, epochs=1, batch_size=4, verbose=0, callbacks=[EvolvingWTA(4)])
    assert model.wta_top_k == 1 and model.train_function is None
    # A resumed fit continues the schedule from its initial epoch.
    history = model.fit(
        x, epochs=3, initial_epoch=1, batch_size=4, verbose=0, callbacks=[EvolvingWTA(4)]
    )
    assert history.history["wta_top_k"] == [4.0, 2.0]


def test_validation_uses_the_wta_whatever_k():
    x = np.random.default_rng(2).random((4, 16, 16, 1)).astype("float32")
    model = tiny_conad(seed=0, hypotheses=4, eps=0.0, adv_weight=0.0)
    plain = model.evaluate(x, batch_size=4, verbose=0, return_dict=True)["recon"]
    model.wta_top_k = 4
    assert model.evaluate(x, batch_size=4, verbose=0, return_dict=True)["recon"] == plain


def test_setting_is_checked_and_old_runs_read_as_off():
    config = base_config()
    assert config.loss.evolving_wta_epochs == 0
    config.loss.evolving_wta_epochs = -1
    with pytest.raises(ConfigError, match="loss.evolving_wta_epochs=-1"):
        validate_config(config)
    config.loss.evolving_wta_epochs = 5
    config.loss.mixture = "mdn"
    with pytest.raises(ConfigError, match="needs config.loss.mixture=wta"):
        validate_config(config)
    assert legacy.VALUES_BEFORE["loss.evolving_wta_epochs"] == 0
