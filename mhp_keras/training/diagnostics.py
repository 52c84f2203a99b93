"""Is ConAD's mechanism working? Three numbers per epoch that say whether D shapes the hypotheses.

The paper's three claims are that several hypotheses fix the autoencoder's blur, that the
discriminator keeps every hypothesis realistic, and that hypotheses discrimination keeps them
diverse. Each gets a measurement, logged every epoch into `history.csv`, TensorBoard and
`metrics.json` by `MechanismDiagnostics`:

* `adv_grad_share`: the norm of the adversarial term's gradient (lambda * L_G, with the epoch's
  mean lambda, `adv_scale`, as training applied it) over the norm of the WTA NLL's gradient, both
  on the variables of the generator's last shared layer (the decoder trunk's last layer, which
  every head reads), on the fixed batch. Near 0, D does not reach the generator. Under the
  adaptive balance every training step's share is `loss.adv_weight` by construction (while
  lambda is below its cap); on the fixed batch, with the epoch's mean lambda, it scatters around
  that value (0.02-0.13 on 64 px bsdata tiles), by how differently lambda fits other batches.
* `head_diversity`: the mean pairwise RMS distance between the heads' means, over the best head's
  RMS error. Near 0, the heads have collapsed onto one output.
* `sharpness`: the high-frequency (finite-difference gradient) energy of the best guess over the
  input's. Below 1 the reconstructions are blurrier than the images.
* `effective_heads`: how many heads are in use, exp of the entropy of the epoch's winner shares
  over the training images (`win_k`): K when every head wins equally often, 1 when one head wins
  everything. `head_diversity` counts every head: under eps = 0 a head learns only from the
  images it wins (one that never wins stays where it started, far from the data), so the
  diversity also grows with specialisation and with dead heads; read the two together.

They are measured on one fixed batch of training images at the end of each epoch: one forward pass
and two gradients of one layer, a small fraction of an epoch's cost.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# Guards the ratios against an exactly-zero denominator (a constant image, a perfect head).
TINY = 1e-12


def _rms(x, axes):
    return tf.sqrt(tf.reduce_mean(tf.square(x), axis=axes))


def head_diversity(images, hypotheses, winner):
    """Mean over images of (mean pairwise RMS distance between heads) / (best head's RMSE).

    images [B, h, w, C], hypotheses [B, K, h, w, C], winner [B] (the best head per image).
    0 for K = 1.
    """
    hypotheses = tf.cast(hypotheses, tf.float32)
    best = tf.gather(hypotheses, tf.cast(winner, tf.int32), axis=1, batch_dims=1)
    return tf.reduce_mean(per_image_head_diversity(images, hypotheses, best))


def per_image_head_diversity(images, hypotheses, best):
    """Per image [B]: the mean pairwise RMS distance between its heads over the RMS error of
    `best` (its best guess [B, h, w, C]); zeros for K = 1."""
    images = tf.cast(images, tf.float32)
    hypotheses = tf.cast(hypotheses, tf.float32)
    k = hypotheses.shape[1]
    if k is None or k < 2:
        return tf.zeros(tf.shape(images)[:1])
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
    distances = tf.stack(
        [_rms(hypotheses[:, i] - hypotheses[:, j], [1, 2, 3]) for i, j in pairs], axis=1
    )
    error = _rms(images - tf.cast(best, tf.float32), [1, 2, 3])
    return tf.reduce_mean(distances, axis=1) / (error + TINY)


def head_shares(logs) -> list[float]:
    """The epoch's winner shares `win_0`, `win_1`, ... from its logs (or a history.csv row)."""
    shares, k = [], 0
    while logs.get(f"win_{k}") is not None:
        shares.append(float(logs[f"win_{k}"]))
        k += 1
    return shares


def effective_heads(shares) -> float | None:
    """exp(entropy) of the winner shares (normalised): the number of equally used heads with the
    same entropy. None without shares."""
    p = np.clip(np.asarray(shares, np.float64), 0.0, None)
    if p.size == 0 or p.sum() <= 0:
        return None
    p = p[p > 0] / p.sum()
    return float(np.exp(-np.sum(p * np.log(p))))


def gradient_energy(images):
    """Sum over each image of its squared horizontal and vertical finite differences, [B]."""
    images = tf.cast(images, tf.float32)
    dy = images[:, 1:] - images[:, :-1]
    dx = images[:, :, 1:] - images[:, :, :-1]
    return tf.reduce_sum(tf.square(dy), [1, 2, 3]) + tf.reduce_sum(tf.square(dx), [1, 2, 3])


def sharpness(images, best):
    """The batch's high-frequency energy of the best guesses over that of the inputs."""
    return tf.reduce_sum(gradient_energy(best)) / (tf.reduce_sum(gradient_energy(images)) + TINY)


def head_sharpness(images, hypotheses):
    """Each head's high-frequency energy over the inputs', on the whole batch: [K].

    images [B, h, w, C], hypotheses [B, K, h, w, C]. A realistic head stays near or below 1 (a
    blurred reconstruction well below); a head that draws a pattern rather than an image (the
    checkerboards of heads trained by D alone, docs/results.md#d-at-equal-relaxation) is many
    times above it, and raises `head_diversity` without being a useful hypothesis.
    """
    return tf.stack([sharpness(images, hypotheses[:, i]) for i in range(hypotheses.shape[1])])


def global_norm(grads) -> tf.Tensor:
    present = [tf.cast(g, tf.float32) for g in grads if g is not None]
    return tf.linalg.global_norm(present) if present else tf.constant(0.0)


def last_shared_layer(decoder: keras.Model):
    """The decoder's last layer with weights before the per-hypothesis heads."""
    layers = [layer for layer in decoder.layers if layer.trainable_weights]
    heads = decoder.get_layer("hypotheses")
    return layers[layers.index(heads) - 1]


class MechanismDiagnostics(keras.callbacks.Callback):
    """Adds `adv_grad_share`, `head_diversity`, `sharpness`, `head_sharpness_max` (the sharpest
    head's `head_sharpness`) and (from the epoch's winner shares) `effective_heads` to every
    epoch's logs.

    Put it before the loggers (CSVLogger, TensorBoard) in the callback list so that they record
    the values. `images` is a fixed batch of training images, float [B, h, w, C] in [0, 1].
    """

    def __init__(self, images):
        super().__init__()
        self.images = tf.constant(np.asarray(images, np.float32))
        self.history: list[dict] = []

    def set_model(self, model):
        super().set_model(model)
        # One traced graph per model: an eager pass would cost as much as many training steps.
        self._measure = tf.function(self._values)

    def _values(self, images, adv_scale):
        model = self.model
        variables = last_shared_layer(model.decoder).trainable_weights
        with tf.GradientTape(persistent=True) as tape:
            out = model.per_sample_losses(images, training=False, adv_scale=adv_scale)
            nll = tf.reduce_mean(out["recon"])
            adv = adv_scale * tf.reduce_mean(out["g_adv"])
        nll_norm = global_norm(tape.gradient(nll, variables))
        adv_norm = global_norm(tape.gradient(adv, variables)) if model.adversarial else 0.0
        del tape
        scored = model.scorer.analyze(images)
        return {
            "adv_grad_share": adv_norm / (nll_norm + TINY),
            "head_diversity": head_diversity(images, scored["hypotheses"], _image_winner(scored)),
            "sharpness": sharpness(images, scored["best_hypothesis"]),
            "head_sharpness_max": tf.reduce_max(head_sharpness(images, scored["hypotheses"])),
        }

    def measure(self, adv_scale=None) -> dict:
        """The values on the fixed batch; `adv_scale` is lambda (default: the model's fixed
        adv_weight)."""
        scale = self.model.adv_weight if adv_scale is None else adv_scale
        values = self._measure(self.images, tf.constant(float(scale), tf.float32))
        return {name: float(value) for name, value in values.items()}

    def on_epoch_end(self, epoch, logs=None):
        values = self.measure((logs or {}).get("adv_scale"))
        used = effective_heads(head_shares(logs or {}))
        if used is not None:
            values["effective_heads"] = used
        self.history.append(values)
        if logs is not None:
            logs.update(values)


def _image_winner(scored):
    """One winning head per image: the per-pixel winners' majority for pixel-wise WTA."""
    winner = scored["winner_index"]
    if len(winner.shape) == 3:
        k = scored["hypotheses"].shape[1]
        votes = tf.reduce_sum(tf.one_hot(winner, k), axis=[1, 2])
        winner = tf.argmax(votes, axis=1, output_type=tf.int32)
    return winner
