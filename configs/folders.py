"""Your own labelled images: data.root/{train,test}/<class>/*.png|jpg|jpeg|bmp, one class normal.

Set the folder (required: it holds train/<class>/ and test/<class>/) and the normal class (a class
folder name, "good" unless given) on the command line, for example:

    python train_main.py --config=configs/folders.py --config.data.root=/data/parts \
        --config.data.normal_class=good

An unreadable image file stops loading with its path named; `--config.data.on_bad_file=skip` logs
and leaves such files out instead.
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "folders"
    c.data.normal_class = "good"
    c.data.image_size = 64
    c.data.channels = 3
    c.model.latent_dim = 32
    return c
