"""The convolutional encoder: image -> (mu, log_var) of q(z|x).

z is a flat vector either way. With one latent cell (`latent_side` 1, the default at every size)
dense layers read the 4x4 bottleneck, as in the keras.io VAE. With a grid of cells each
cell's 4x4 block of the bottleneck gives that cell's part of z, through a 4x4 stride-4
convolution (the same dense map, applied per cell), so the latent grows with the image
(docs/design.md#the-latent-grid).
"""

import keras

from mhp_keras.config.model_settings import DEFAULTS
from mhp_keras.models.blocks import downsampling_stack
from mhp_keras.models.shapes import BOTTLENECK


def build_encoder(
    image_size,
    channels,
    latent_dim,
    base_filters=DEFAULTS["base_filters"],
    max_filters=DEFAULTS["max_filters"],
    dense_units=DEFAULTS["dense_units"],
    latent_side=1,
) -> keras.Model:
    """Stride-2 convolutions from image_size down to 4 x latent_side pixels a side, then mu and
    log_var of latent_dim per cell, flattened to [B, latent_side**2 * latent_dim]."""
    image = keras.Input((image_size, image_size, channels), name="image")
    h = downsampling_stack(image, image_size, base_filters, max_filters, latent_side)
    if latent_side == 1:
        h = keras.layers.Flatten(name="flatten")(h)
        if dense_units:
            h = keras.layers.Dense(dense_units, name="dense")(h)
            h = keras.layers.LeakyReLU(0.2, name="act_dense")(h)
        mu = keras.layers.Dense(latent_dim, name="mu")(h)
        log_var = keras.layers.Dense(latent_dim, name="log_var")(h)
        return keras.Model(image, [mu, log_var], name="encoder")
    if dense_units:
        h = cell_dense(h, dense_units, name="dense")
        h = keras.layers.LeakyReLU(0.2, name="act_dense")(h)
    # After a per-cell hidden layer the cells are 1x1: mu and log_var read one position each.
    outputs = [
        cell_dense(h, latent_dim, name, kernel=1 if dense_units else BOTTLENECK)
        for name in ("mu", "log_var")
    ]
    size = latent_side * latent_side * latent_dim
    mu, log_var = (
        keras.layers.Reshape((size,), name=f"{n}_flat")(t)
        for n, t in zip(("mu", "log_var"), outputs, strict=True)
    )
    return keras.Model(image, [mu, log_var], name="encoder")


def cell_dense(h, units, name, kernel=BOTTLENECK):
    """A dense layer per latent cell: a kernel x kernel convolution at stride kernel."""
    return keras.layers.Conv2D(units, kernel, strides=kernel, name=name)(h)
