"""The textures demo with a dark frame of varying width around every patch.

Inspection images often show a border of background or fixture whose width changes from image
to image. Such a border is normal content, but it gives the discriminator an easy cue, so this
set checks that the adversarial training stays balanced and stable (`benchmarks/stability.py`).
Everything else is `configs/textures.py`.
"""

from configs.textures import get_config as textures_config


def get_config():
    c = textures_config()
    c.data.frame_border = 0.15  # each side up to 15 % of the patch wide, drawn per image
    return c
