"""Defect localization at native resolution: the bundled texture photos, trained and scored on
tiles.

Like `configs/textures.py`, but nothing is resized: 128 x 128 patches cut from the 512 px photos at
their native resolution are trained on as 32 x 32 tiles (`data.crop=tile`) and scored tile by
tile with overlapping tiles (`score.tiling=auto` follows the crop), so maps and masks keep the
patch's own 128 x 128 pixels. Compare with the resized run:

    python train_main.py --config=configs/textures_tiled.py
"""

from configs import textures


def get_config():
    c = textures.get_config()
    c.data.patch_size = 128  # native photo pixels; each patch is 4 x 4 tiles of 32
    c.data.train_patches = 150
    c.data.test_patches = 100
    c.data.crop = "tile"
    c.train.epochs = 40
    return c
