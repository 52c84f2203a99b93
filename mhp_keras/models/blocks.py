"""The stride-2 convolution stack shared by the encoder and the discriminator.

Both networks read an image the same way, from full resolution down to the bottleneck; one
definition keeps their architectures from drifting apart.
"""

import keras

from mhp_keras.models.shapes import num_stages, stage_filters


def downsampling_stack(h, image_size: int, base_filters: int, max_filters: int, latent_side=1):
    """Conv(4x4, stride 2) + LeakyReLU(0.2) per stage, from image_size down to 4 x latent_side
    pixels a side (4x4 for the discriminator and a one-cell latent)."""
    for stage in range(num_stages(image_size, latent_side)):
        h = keras.layers.Conv2D(
            stage_filters(stage, base_filters, max_filters),
            4,
            strides=2,
            padding="same",
            name=f"conv_{stage}",
        )(h)
        h = keras.layers.LeakyReLU(0.2, name=f"act_{stage}")(h)
    return h
