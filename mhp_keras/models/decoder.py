"""The multi-hypotheses decoder: z -> H per-pixel Gaussians over the image.

A dense layer and a shared Conv2DTranspose trunk do all the work up to half resolution; only the
last, cheap layer is per hypothesis, so adding hypotheses costs almost nothing. With a grid of
latent cells (`latent_side` > 1) each cell's part of z is projected to its own 4x4 block of the
bottleneck by a 4x4 stride-4 transposed convolution, the dense projection applied per cell
(docs/design.md#the-latent-grid).
"""

import keras

from mhp_keras.config.model_settings import DEFAULTS
from mhp_keras.models.layers import HypothesisHeads
from mhp_keras.models.shapes import BOTTLENECK, num_stages, stage_filters


def build_decoder(
    image_size,
    channels,
    latent_dim,
    hypotheses,
    base_filters=DEFAULTS["base_filters"],
    max_filters=DEFAULTS["max_filters"],
    dense_units=DEFAULTS["dense_units"],
    logvar_min=DEFAULTS["logvar_min"],
    logvar_max=DEFAULTS["logvar_max"],
    fused_heads=DEFAULTS["fused_heads"],
    channel_layout="blocked",
    latent_side=1,
) -> keras.Model:
    """Outputs (means, log_vars), each [B, hypotheses, image_size, image_size, channels], from z
    of latent_side**2 * latent_dim."""
    stages = num_stages(image_size, latent_side)
    top = stage_filters(stages - 1, base_filters, max_filters)
    z = keras.Input((latent_side * latent_side * latent_dim,), name="z")
    if latent_side == 1:
        h = z
        if dense_units:
            h = keras.layers.Dense(dense_units, name="dense")(h)
            h = keras.layers.LeakyReLU(0.2, name="act_dense")(h)
        h = keras.layers.Dense(BOTTLENECK * BOTTLENECK * top, name="project")(h)
        h = keras.layers.Reshape((BOTTLENECK, BOTTLENECK, top), name="reshape")(h)
    else:
        h = keras.layers.Reshape((latent_side, latent_side, latent_dim), name="cells")(z)
        if dense_units:
            h = keras.layers.Conv2D(dense_units, 1, name="dense")(h)
            h = keras.layers.LeakyReLU(0.2, name="act_dense")(h)
        h = keras.layers.Conv2DTranspose(top, BOTTLENECK, strides=BOTTLENECK, name="project")(h)
    h = keras.layers.LeakyReLU(0.2, name="act_project")(h)
    # Trunk stages go from the bottleneck up to half resolution; the heads do the last doubling.
    for stage in reversed(range(stages - 1)):
        h = keras.layers.Conv2DTranspose(
            stage_filters(stage, base_filters, max_filters),
            4,
            strides=2,
            padding="same",
            name=f"deconv_{stage}",
        )(h)
        h = keras.layers.LeakyReLU(0.2, name=f"act_{stage}")(h)
    means, log_vars = HypothesisHeads(
        hypotheses,
        channels,
        logvar_min=logvar_min,
        logvar_max=logvar_max,
        fused=fused_heads,
        channel_layout=channel_layout,
        name="hypotheses",
    )(h)
    return keras.Model(z, [means, log_vars], name="decoder")
