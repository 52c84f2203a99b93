"""Your own labelled images: data.root/{train,test}/<class>/*.png|jpg|jpeg|bmp, one class normal.

Set the folder and the normal class on the command line, for example:

    python train_main.py --config=configs/folders.py --config.data.root=/data/parts \
        --config.data.normal_class=good
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "folders"
    c.data.root = ""  # required: holds train/<class>/ and test/<class>/
    c.data.normal_class = "good"  # a class folder name
    c.data.image_size = 64
    c.data.channels = 3
    c.data.batch_size = 32
    c.data.on_bad_file = "error"  # or "skip" to log and leave out unreadable files
    c.model.hypotheses = 4
    c.model.latent_dim = 32
    c.train.epochs = 50
    return c
