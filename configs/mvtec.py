"""MVTec AD (download it yourself): one category, train/good normal, defects with masks in test.

Two hypotheses and a top-10 % pixel score (`score.topk_fraction`'s default), as in the paper's
metal-surface experiment. Set the dataset folder (required: the one holding bottle/, cable/,
carpet/, ...) and the category (required: e.g. carpet, grid, leather, tile, wood, bottle, screw) on
the command line, for example:

    python train_main.py --config=configs/mvtec.py --config.data.root=/data/mvtec_ad \
        --config.data.category=carpet

`data.crop=auto` trains and scores on `data.image_size` tiles of the large (700-1024 px) images at
native resolution, 16 random tiles per image and epoch (`data.tiles_per_image`; 0 = every tile);
`--config.data.crop=none` resizes the whole images instead.
"""

from mhp_keras.config.defaults import base_config


def get_config():
    c = base_config()
    c.data.name = "mvtec"
    c.data.normal_class = "good"
    c.data.image_size = 64
    c.data.channels = 3  # grey categories (grid, screw, zipper) are repeated into RGB
    c.data.batch_size = 16
    c.data.crop = "auto"  # the 700-1024 px images are tiled at image_size 64
    # 16 random tiles per image and epoch keep an epoch's cost independent of the image size
    # (every tile of a 1,024 px image is 256 examples); a bound, not yet a tuned value.
    c.data.tiles_per_image = 16
    c.model.hypotheses = 2
    c.model.latent_dim = 64
    c.score.aggregate = "topk"
    c.train.epochs = 100
    return c
