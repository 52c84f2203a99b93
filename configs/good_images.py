"""A new production line with good images only: one folder of normal images is enough to start.

The folder is split into train, validation (the threshold) and a normal test part. Image AUROC
needs anomalous images; until there are some, the result is the threshold and how the normal test
images score against it. Set the folder on the command line, for example:

    python train_main.py --config=configs/good_images.py --config.data.normal_dir=/data/line1/good

and once some defects are collected (masks optional, named <image stem>.png or <stem>_mask.png):

    python train_main.py --config=configs/good_images.py --config.data.normal_dir=/data/line1/good \
        --config.data.abnormal_dir=/data/line1/defects --config.data.mask_dir=/data/line1/masks
"""

from configs import folders


def get_config():
    # The class-folder config's model and image settings, with one folder instead of classes.
    c = folders.get_config()
    c.data.root = ""
    c.data.normal_dir = ""  # required: a folder of normal (good) images
    c.data.abnormal_dir = ""  # optional: anomalous images, added to the test split
    c.data.mask_dir = ""  # optional: masks of the anomalous images (pixel AUROC, AUPRO)
    c.data.normal_class = "normal"  # ignored with data.normal_dir; the classes are normal/anomalous
    c.data.test_fraction = 0.3  # of the normal images, kept as normal test images
    c.data.val_fraction = 0.1  # of the remaining normal images, for the threshold
    return c
