"""The tiny ConAD the tests train and export: small enough that a step takes milliseconds."""

import keras
import numpy as np
import tensorflow as tf

from mhp_keras.models import ConAD

TINY = dict(
    image_size=16, channels=1, hypotheses=2, latent_dim=4, base_filters=8, disc_base_filters=8
)


def tiny_conad(seed: int | None = None, compile: bool = True, **overrides) -> ConAD:
    """A compiled tiny ConAD (16x16, grey, two heads unless overridden); `seed` fixes its
    initial weights."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = ConAD(**(TINY | overrides))
    if compile:
        model.compile()
    return model


def head_gradients(model, x):
    """Gradient of the generator loss w.r.t. each head's kernel slice, and each head's win count."""
    heads = model.decoder.get_layer("hypotheses").convs[0]
    with tf.GradientTape() as tape:
        out = model.per_sample_losses(x, training=True)
        loss = tf.nn.compute_average_loss(out["loss"])
    kernel_grad, bias_grad = tape.gradient(loss, [heads.kernel, heads.bias])
    k_total, c_total = model.hypotheses, model.channels
    per_head = []
    for k in range(k_total):
        # Blocked layout: head k's mean channel c is c * K + k, its log-variance K * C + c * K + k.
        index = [c * k_total + k for c in range(c_total)]
        index += [k_total * c_total + i for i in index]
        per_head.append(
            np.abs(kernel_grad.numpy()[:, :, index]).sum() + np.abs(bias_grad.numpy()[index]).sum()
        )
    wins = out["win"].numpy().sum(0)
    return np.array(per_head), wins
