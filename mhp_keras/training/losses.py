"""The numerical core of ConAD: Gaussian NLL, KL, winner-takes-all selection and score aggregation.

Pure tensor functions, vectorised over hypotheses (no Python loop over heads), so the training step,
scoring and the SavedModel signature share one implementation and the tests can check each against
numpy closed forms.

Shapes: x is [B, h, w, C]; hypothesis means and log-variances are [B, K, h, w, C] (or, in the
training step, the decoder's native [B, h, w, C, K], with head_axis=4); NLL maps are [B, K, h, w]
(or [B, h, w, K] from the native layout).

The WTA mode, the relaxation eps and the score aggregation have no defaults here: their one source
is the experiment config (`mhp_keras/config/defaults.py`), which ConAD passes in.
"""

import math

import tensorflow as tf

from mhp_keras.config.model_settings import AGGREGATES, WTA_MODES

LOG_2PI = math.log(2.0 * math.pi)


def _channel_axis(head_axis):
    """Where the image channels are in a [B, h, w, C] tensor with a heads axis inserted."""
    return 3 if head_axis == 4 else 4


def gaussian_nll(x, mean, log_var, head_axis=1):
    """Per-pixel NLL of x under each hypothesis' diagonal Gaussian, summed over channels.

    `mean` and `log_var` have their heads on `head_axis` (1 for [B, K, h, w, C], 4 for the native
    [B, h, w, C, K]). Returns [B, K, h, w], or [B, h, w, K] for head_axis=4.

    NLL = 0.5 * (log 2pi + log_var + (x - mean)^2 / exp(log_var)), computed in float32 whatever the
    compute dtype so that mixed precision never changes the loss or the score.
    """
    x = tf.expand_dims(tf.cast(x, tf.float32), head_axis)  # broadcast over the heads
    mean = tf.cast(mean, tf.float32)
    log_var = tf.cast(log_var, tf.float32)
    per_channel = 0.5 * (LOG_2PI + log_var + tf.square(x - mean) * tf.exp(-log_var))
    return tf.reduce_sum(per_channel, axis=_channel_axis(head_axis))


# The posterior's log-variance is squashed smoothly into (-8, 8): exp(8) ~ 3,000 is far beyond any
# useful variance, and unbounded it could overflow exp() in the sampling and the KL when a run
# goes wrong. Near 0, where it lives in a healthy run, the squash is almost the identity.
POSTERIOR_LOGVAR_BOUND = 8.0


def bounded_log_var(log_var, bound: float = POSTERIOR_LOGVAR_BOUND):
    """bound * tanh(log_var / bound): a smooth bound to (-bound, bound)."""
    return bound * tf.tanh(log_var / bound)


def kl_to_standard_normal(mu, log_var):
    """KL(N(mu, exp(log_var)) || N(0, I)) per sample, summed over latent dimensions: [B]."""
    mu = tf.cast(mu, tf.float32)
    log_var = tf.cast(log_var, tf.float32)
    return 0.5 * tf.reduce_sum(tf.square(mu) + tf.exp(log_var) - 1.0 - log_var, axis=-1)


def top_k_winners(scores, top_k, axis):
    """A 0/1 mask, shaped like `scores`, of the `top_k` lowest scores along `axis` (ties to the
    lower index). `top_k` = 1 is the argmin's one-hot."""
    depth = tf.shape(scores)[axis]
    if top_k == 1:  # the WTA's own one-hot, so that the default step is unchanged
        return tf.one_hot(tf.argmin(scores, axis=axis), depth, axis=axis, dtype=scores.dtype)
    ranks = tf.argsort(tf.argsort(scores, axis=axis, stable=True), axis=axis, stable=True)
    return tf.cast(ranks < top_k, scores.dtype)


def _head_weights(scores, eps, top_k):
    """Stop-gradient weights over the heads (axis 1 of `scores`, lower = better): the `top_k`
    best share 1 - eps equally and the K - top_k others share eps; with no other (top_k >= K)
    every head gets 1 / K. `top_k` = 1 is the WTA: winner 1 - eps, and a single head gets 1."""
    winners = top_k_winners(scores, top_k, axis=1)
    k = tf.cast(tf.shape(winners)[1], winners.dtype)
    top = tf.minimum(tf.cast(top_k, winners.dtype), k)
    losers = k - top
    loser_weight = tf.where(losers > 0, eps / tf.maximum(losers, 1.0), 0.0)
    winner_weight = tf.where(losers > 0, (1.0 - eps) / top, 1.0 / k)
    return tf.stop_gradient(winners * winner_weight + (1.0 - winners) * loser_weight)


def winner_mask(nll, mode, eps, top_k=1):
    """The (stop-gradient) WTA weights over hypotheses, shaped like `nll` [B, K, h, w].

    "sample": one winner per image, the head with the lowest summed NLL. "pixel": one winner per
    pixel. The winner gets weight 1 - eps and the K - 1 losers share eps (with K = 1 the only head
    gets weight 1). Ties go to the lowest head index. `top_k` > 1 (the evolving WTA's early
    epochs, `mhp_keras.training.evolving_wta`) makes the best `top_k` heads the winners, sharing
    1 - eps equally.
    """
    if mode == "sample":
        weights = _head_weights(tf.reduce_sum(nll, axis=[2, 3]), eps, top_k)  # [B, K]
        return tf.broadcast_to(weights[:, :, None, None], tf.shape(nll))
    if mode == "pixel":
        return _head_weights(nll, eps, top_k)
    raise ValueError(f"mode={mode!r}: expected one of {list(WTA_MODES)}.")


def wta_loss(nll, mode, eps, top_k=1):
    """Per-sample WTA reconstruction loss [B]: the winner-weighted NLL summed over pixels.

    Per-image winners weigh the per-head sums [B, K] instead of every pixel, which saves a
    full-size mask and its gradient in the training step; the value is the same.
    """
    if mode == "sample":
        per_head = tf.reduce_sum(nll, axis=[2, 3])
        return tf.reduce_sum(_head_weights(per_head, eps, top_k) * per_head, axis=1)
    return tf.reduce_sum(winner_mask(nll, mode, eps, top_k) * nll, axis=[1, 2, 3])


def winner_index(nll, mode):
    """Winning head per image [B] ("sample") or per pixel [B, h, w] ("pixel")."""
    if mode == "sample":
        return tf.argmin(tf.reduce_sum(nll, axis=[2, 3]), axis=1, output_type=tf.int32)
    return tf.argmin(nll, axis=1, output_type=tf.int32)


def anomaly_map(nll, mode):
    """Per-pixel anomaly map [B, h, w]: the NLL under the winning head (WTA NLL before summing)."""
    if mode == "sample":
        winners = winner_index(nll, "sample")
        return tf.gather(nll, winners, axis=1, batch_dims=1)
    if mode == "pixel":
        return tf.reduce_min(nll, axis=1)
    raise ValueError(f"mode={mode!r}: expected one of {list(WTA_MODES)}.")


def take_last_axis(values, index):
    """values[b, ..., index[b]] for a [B, ..., K] tensor and [B] indices: [B, ...].

    A batched matmul with one-hot vectors, which is exact (one product by 1, the rest by 0) and
    on CPU about twice as fast as a batch-dims gather along the innermost axis, with a gradient
    that is another matmul instead of a scatter.
    """
    shape = tf.shape(values)
    one_hot = tf.one_hot(index, shape[-1], dtype=values.dtype)[:, :, None]  # [B, K, 1]
    flat = tf.reshape(values, tf.stack([shape[0], -1, shape[-1]]))
    return tf.reshape(tf.matmul(flat, one_hot), shape[:-1])


def best_hypothesis(means, nll, mode, head_axis=1):
    """The best guess [B, h, w, C]: the winning head's mean, chosen per image or per pixel.

    `nll` is [B, K, h, w]; `means` has its heads on `head_axis` (1, or 4 for [B, h, w, C, K]).
    """
    winners = winner_index(nll, mode)
    if mode == "sample" and head_axis == 4:
        return take_last_axis(means, winners)
    if mode == "sample":
        return tf.gather(means, winners, axis=head_axis, batch_dims=1)
    k = tf.shape(means)[head_axis]
    heads_at = -1 if head_axis == 4 else head_axis  # the one-hot's axis among [B, h, w]
    one_hot = tf.one_hot(winners, k, axis=heads_at, dtype=means.dtype)
    one_hot = tf.expand_dims(one_hot, _channel_axis(head_axis))
    return tf.reduce_sum(one_hot * means, axis=head_axis)


def aggregate_map(amap, method, topk_fraction, region=None):
    """Image score [B] from an anomaly map [B, h, w]: sum, mean, or over the top fraction.

    "topk" is the mean of the ceil(fraction * n) largest of the n pixels (at least one), so
    images of different sizes compare fairly; "topk_sum" is their sum, the paper's top-10 % score
    on fixed-size images (the two rank a fixed-size set identically). Both keep a small defect
    from being diluted by the rest of the image. With `region` (bool [B, h, w]) only its pixels
    count: n is each image's region size (an empty region scores -inf for the top fraction).
    """
    if method not in AGGREGATES:
        raise ValueError(f"method={method!r}: expected one of {list(AGGREGATES)}.")
    flat = tf.reshape(amap, [tf.shape(amap)[0], -1])
    if region is None:
        return _aggregate_all(flat, method, topk_fraction)
    inside = tf.reshape(tf.cast(region, tf.bool), tf.shape(flat))
    count = tf.reduce_sum(tf.cast(inside, flat.dtype), axis=1)
    if method in ("sum", "mean"):
        total = tf.reduce_sum(tf.where(inside, flat, tf.zeros_like(flat)), axis=1)
        return total if method == "sum" else total / tf.maximum(count, 1.0)
    k = tf.math.ceil(tf.cast(count, tf.float64) * topk_fraction)
    k = tf.cast(tf.clip_by_value(k, 1.0, tf.cast(tf.shape(flat)[1], tf.float64)), tf.int32)
    lowest = tf.fill(tf.shape(flat), tf.constant(float("-inf"), flat.dtype))
    top = tf.math.top_k(tf.where(inside, flat, lowest), k=tf.reduce_max(k), sorted=True).values
    taken = tf.range(tf.shape(top)[1])[None, :] < k[:, None]
    total = tf.reduce_sum(tf.where(taken, top, tf.zeros_like(top)), axis=1)
    return total if method == "topk_sum" else total / tf.cast(k, flat.dtype)


def _aggregate_all(flat, method, topk_fraction):
    """`aggregate_map` over every pixel of [B, n] maps."""
    if method == "sum":
        return tf.reduce_sum(flat, axis=1)
    if method == "mean":
        return tf.reduce_mean(flat, axis=1)
    n = tf.shape(flat)[1]
    k = tf.cast(tf.math.ceil(tf.cast(n, tf.float64) * topk_fraction), tf.int32)
    k = tf.clip_by_value(k, 1, n)
    top = tf.math.top_k(flat, k=k, sorted=False).values
    return tf.reduce_sum(top, axis=1) if method == "topk_sum" else tf.reduce_mean(top, axis=1)


def gaussian_kernel_1d(sigma: float) -> list[float]:
    """A normalised Gaussian of standard deviation `sigma` pixels, truncated at 3 sigma."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    weights = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
    total = sum(weights)
    return [w / total for w in weights]


def smooth_map(amap, sigma: float):
    """[B, h, w] maps blurred by a Gaussian of `sigma` pixels (0 = unchanged), reflecting at the
    borders so edges are not darkened; separable, as two 1-D convolutions."""
    if sigma <= 0:
        return amap
    kernel = tf.constant(gaussian_kernel_1d(sigma), tf.float32)
    radius = (int(kernel.shape[0]) - 1) // 2
    x = tf.cast(amap, tf.float32)[..., None]
    # Reflection needs the map to be wider than the kernel's radius; symmetric padding repeats
    # the edge pixel and works down to 1-pixel maps.
    x = tf.pad(x, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    x = tf.nn.conv2d(x, tf.reshape(kernel, [-1, 1, 1, 1]), 1, "VALID")
    x = tf.nn.conv2d(x, tf.reshape(kernel, [1, -1, 1, 1]), 1, "VALID")
    return x[..., 0]
