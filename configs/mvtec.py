"""MVTec AD (download it yourself): one category, train/good normal, defects with masks in test.

Two hypotheses and a top-10 % pixel score, as in the paper's metal-surface experiment. Set the
dataset folder and category on the command line, for example:

    python train_main.py --config=configs/mvtec.py --config.data.root=/data/mvtec_ad \
        --config.data.category=carpet
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "mvtec"
    c.data.root = ""  # required: the folder holding bottle/, cable/, carpet/, ...
    c.data.category = ""  # required: e.g. carpet, grid, leather, tile, wood, bottle, screw
    c.data.normal_class = "good"
    c.data.image_size = 64
    c.data.channels = 3  # grey categories (grid, screw, zipper) are repeated into RGB
    c.data.batch_size = 16
    c.data.crop = "none"  # "random" or "tile" train on crops of the large (700-1024 px) images
    c.model.hypotheses = 2
    c.model.latent_dim = 64
    c.model.base_filters = 32
    c.score.aggregate = "topk"
    c.score.topk_fraction = 0.1
    c.train.epochs = 100
    return c
