"""Image-size arithmetic shared by the encoder, decoder and discriminator.

All three networks halve or double the resolution between the image and a bottleneck of 4x4
pixels per latent cell (`latent_side` cells a side; the discriminator always goes down to 4x4),
so the number of stages and the filters per stage are derived here, once, from the image size.

Why a grid of latent cells: one dense latent vector for the whole image has to describe four
times as many pixels at each doubling of the image size, with the same width, and the textures
demo lost its fine structure at 64 and 128 px (docs/design.md#the-latent-grid). One cell per
`latent_cell_px` pixels a side keeps a config's capacity per pixel at every size.
"""

from mhp_keras.config.model_settings import SUPPORTED_SIZES

BOTTLENECK = 4


def num_stages(image_size: int, latent_side: int = 1) -> int:
    """Number of stride-2 stages between image_size and the bottleneck of BOTTLENECK x
    latent_side pixels a side."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(
            f"image_size={image_size} is not supported: expected a power of two in "
            f"{list(SUPPORTED_SIZES)}."
        )
    return (image_size // (BOTTLENECK * latent_side)).bit_length() - 1


def latent_side(image_size: int, latent_cell_px: int) -> int:
    """Latent cells a side: one per `latent_cell_px` pixels, at least 1; 1 for 0 (one cell for
    the whole image)."""
    return max(1, image_size // latent_cell_px) if latent_cell_px else 1


def stage_filters(stage: int, base_filters: int, max_filters: int) -> int:
    """Filters at a stage counted from the image side: doubles per stage, capped."""
    return min(base_filters * 2**stage, max_filters)
