"""The tiny ConAD the tests train and export: small enough that a step takes milliseconds."""

import keras

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
