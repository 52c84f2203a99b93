"""Checks of ground-truth mask files against their images, shared by the loaders that read masks
from disk (MVTec AD, a folder of normal images with `data.mask_dir`).

The pipeline resizes an image and its mask to `data.image_size` separately, so a mask of another
size would still load, silently misplaced over its image; it is refused up front instead, naming
both files.
"""

from __future__ import annotations

from mhp_keras.data.image_files import image_size
from mhp_keras.errors import DataError


def check_mask_size(mask: str, image: str) -> None:
    """Raises a DataError naming both files unless the mask has its image's width and height."""
    (mw, mh), (iw, ih) = image_size(mask), image_size(image)
    if (mw, mh) != (iw, ih):
        raise DataError(
            f"Mask {mask} is {mw}x{mh} pixels but its image {image} is {iw}x{ih}: a mask must "
            "have the size of its image."
        )
