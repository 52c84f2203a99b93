"""Image-size arithmetic shared by the encoder, decoder and discriminator.

All three networks halve or double the resolution between the image and a 4x4 bottleneck, so the
number of stages and the filters per stage are derived here, once, from the image size.
"""

from mhp_keras.config.model_settings import SUPPORTED_SIZES

BOTTLENECK = 4


def num_stages(image_size: int) -> int:
    """Number of stride-2 stages between image_size and the 4x4 bottleneck."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(
            f"image_size={image_size} is not supported: expected a power of two in "
            f"{list(SUPPORTED_SIZES)}."
        )
    return (image_size // BOTTLENECK).bit_length() - 1


def stage_filters(stage: int, base_filters: int, max_filters: int) -> int:
    """Filters at a stage counted from the image side: doubles per stage, capped."""
    return min(base_filters * 2**stage, max_filters)
