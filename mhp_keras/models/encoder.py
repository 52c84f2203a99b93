"""The convolutional encoder: image -> (mu, log_var) of q(z|x)."""

import keras

from mhp_keras.config.model_settings import DEFAULTS
from mhp_keras.models.blocks import downsampling_stack


def build_encoder(
    image_size,
    channels,
    latent_dim,
    base_filters=DEFAULTS["base_filters"],
    max_filters=DEFAULTS["max_filters"],
    dense_units=DEFAULTS["dense_units"],
) -> keras.Model:
    """Stride-2 convolutions from image_size down to 4x4, then dense heads for mu and log_var."""
    image = keras.Input((image_size, image_size, channels), name="image")
    h = downsampling_stack(image, image_size, base_filters, max_filters)
    h = keras.layers.Flatten(name="flatten")(h)
    if dense_units:
        h = keras.layers.Dense(dense_units, name="dense")(h)
        h = keras.layers.LeakyReLU(0.2, name="act_dense")(h)
    mu = keras.layers.Dense(latent_dim, name="mu")(h)
    log_var = keras.layers.Dense(latent_dim, name="log_var")(h)
    return keras.Model(image, [mu, log_var], name="encoder")
