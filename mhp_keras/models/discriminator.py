"""The discriminator: image -> real/fake logit, with a minibatch statistic against collapse."""

import keras

from mhp_keras.config.model_settings import DEFAULTS
from mhp_keras.models.blocks import downsampling_stack
from mhp_keras.models.layers import MinibatchDiscrimination, MinibatchStdDev
from mhp_keras.models.shapes import num_stages, stage_filters


def build_discriminator(
    image_size,
    channels,
    base_filters=DEFAULTS["disc_base_filters"],
    max_filters=DEFAULTS["max_filters"],
    minibatch_std=DEFAULTS["minibatch_std"],
    group_size=0,
    minibatch_kernels=DEFAULTS["minibatch_kernels"],
) -> keras.Model:
    """Stride-2 convolutions to 4x4, the minibatch stddev channel, one more conv, a dense logit;
    with `minibatch_kernels` > 0, the flat features also get that many minibatch-discrimination
    features (`MinibatchDiscrimination`) before the logit.

    `group_size=K` computes the stddev channel (and the minibatch features) within each K
    consecutive images instead of over the whole batch: hypotheses discrimination, where D sees
    one input's K hypotheses as one group (see `MinibatchStdDev`).

    No batch normalisation: each call sees a batch from one source only, and batch statistics
    would let the discriminator tell sources apart by normalisation instead of by content.
    """
    image = keras.Input((image_size, image_size, channels), name="image")
    h = downsampling_stack(image, image_size, base_filters, max_filters)
    stages = num_stages(image_size)
    if minibatch_std:
        h = MinibatchStdDev(group_size, name="minibatch_std")(h)
    h = keras.layers.Conv2D(
        stage_filters(stages - 1, base_filters, max_filters), 3, padding="same", name="conv_top"
    )(h)
    h = keras.layers.LeakyReLU(0.2, name="act_top")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    if minibatch_kernels:
        features = MinibatchDiscrimination(
            minibatch_kernels, group_size=group_size, name="minibatch_disc"
        )
        h = features(h)
    logit = keras.layers.Dense(1, name="logit")(h)
    return keras.Model(image, logit, name="discriminator")
