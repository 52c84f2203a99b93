"""A new production line with good images only: one folder of normal images is enough to start.

The folder (`data.normal_dir`, required) is split into train, validation (a `data.val_fraction`,
for the threshold) and a normal test part (a `data.test_fraction`). Image AUROC needs anomalous
images; until there are some, the result is the threshold and how the normal test images score
against it. Set the folder on the command line, for example:

    python train_main.py --config=configs/good_images.py --config.data.normal_dir=/data/line1/good

and once some defects are collected (`data.abnormal_dir`, added to the test split; masks optional,
in `data.mask_dir`, named <image stem>.png or <stem>_mask.png, for pixel AUROC and AUPRO):

    python train_main.py --config=configs/good_images.py --config.data.normal_dir=/data/line1/good \
        --config.data.abnormal_dir=/data/line1/defects --config.data.mask_dir=/data/line1/masks

The model and image settings are configs/folders.py's, with one folder instead of classes.
"""

from configs import folders


def get_config():
    c = folders.get_config()
    c.data.normal_class = "normal"  # ignored with data.normal_dir; the classes are normal/anomalous
    c.data.crop = "auto"  # tiles for large photos, whole images for small ones
    return c
