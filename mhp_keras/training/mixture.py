"""The mixture-density decoder (MDN-H): the paper's other multiple-hypotheses baseline.

Where ConAD's heads compete winner-takes-all, a mixture density network (Bishop, 1994) weighs
them: the decoder's K Gaussians, each a whole image, plus mixing coefficients pi_k(z) from a dense
layer on z (`ConAD.mixer`), give

    p(x | z) = sum_k pi_k(z) N(x; mu_k(z), sigma_k(z)),

trained by its negative log-likelihood (`mixture_nll`), every head getting the gradient in
proportion to its responsibility r_k = pi_k N_k / p. The paper's table has it alone (MDN-H) and
with the discriminator (MDN+ConAD-H).

Scoring by the mixture NLL, with a map: since log p = log pi_k - nll_k - log r_k for every k,

    -log p(x) = sum_pixels sum_k r_k nll_k(pixel) + KL(r || pi),

so the responsibility-weighted per-pixel NLL (`mixture_map`) is the exact per-pixel part of the
score, and KL(r || pi) (`mixture_remainder`, >= 0) the image-level rest, which a summed score adds
back. Pure tensor functions on the NLL maps of `mhp_keras.training.losses`, so training, scoring
and the SavedModel share them, and the tests check them against numpy.
"""

from __future__ import annotations

import tensorflow as tf

MIXTURES = ("wta", "mdn")


def log_weights(logits):
    """log pi [B, K] from the mixer's logits, in float32."""
    return tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)


def head_log_likelihoods(nll, log_pi):
    """log pi_k - nll_k per image [B, K] from NLL maps [B, K, h, w]."""
    return log_pi - tf.reduce_sum(nll, axis=[2, 3])


def mixture_nll(nll, log_pi):
    """-log p(x) per image [B]: -logsumexp_k(log pi_k - nll_k)."""
    return -tf.reduce_logsumexp(head_log_likelihoods(nll, log_pi), axis=1)


def responsibilities(nll, log_pi):
    """r_k = pi_k N_k / p per image [B, K] (rows sum to 1)."""
    return tf.nn.softmax(head_log_likelihoods(nll, log_pi), axis=1)


def responsible_head(nll, log_pi):
    """The head with the largest responsibility per image [B], ties to the lowest index."""
    return tf.argmax(head_log_likelihoods(nll, log_pi), axis=1, output_type=tf.int32)


def mixture_map(nll, log_pi):
    """The responsibility-weighted per-pixel NLL [B, h, w]."""
    r = tf.stop_gradient(responsibilities(nll, log_pi))
    return tf.einsum("bk,bkhw->bhw", r, nll)


def mixture_remainder(nll, log_pi):
    """KL(r || pi) per image [B]: what the mixture NLL adds to the summed `mixture_map`."""
    log_r = tf.nn.log_softmax(head_log_likelihoods(nll, log_pi), axis=1)
    return tf.reduce_sum(tf.exp(log_r) * (log_r - log_pi), axis=1)


def scoring_terms(model, images) -> dict:
    """What `mhp_keras.scoring.scorer.Scorer.analyze` needs of an MDN model for a float batch:
    the heads' `means` [B, K, h, w, C], the `raw_map` (`mixture_map`), the most responsible head
    (`winner_index`) and its mean (`best_hypothesis`), and the `remainder` KL(r || pi) that a
    summed score adds. z is the posterior mean, as for every model."""
    from mhp_keras.training import losses

    mu, _ = model.encoder(images, training=False)
    means, log_vars = model.decoder(mu, training=False)
    nll = losses.gaussian_nll(images, means, log_vars)
    log_pi = log_weights(model.mixer(mu, training=False))
    winner = responsible_head(nll, log_pi)
    return {
        "means": means,
        "raw_map": mixture_map(nll, log_pi),
        "winner_index": winner,
        "best_hypothesis": tf.gather(means, winner, axis=1, batch_dims=1),
        "remainder": mixture_remainder(nll, log_pi),
    }
