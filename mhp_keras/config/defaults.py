"""The full set of config keys with their defaults.

Every file under `configs/` starts from `base_config()` and changes only what its dataset needs, so
each key is documented once, here, and every key exists in every config (and so can be overridden
from the command line as `--config.section.key=value`).
"""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model_name = "conad"  # the TF Serving model name under workdir/export/

    c.data = ml_collections.ConfigDict()
    c.data.name = "digits"  # digits | textures | tfds | folders | mvtec
    c.data.normal_class = "0"  # class name (or index as text) that is normal
    c.data.image_size = 16  # power of two in [16, 256]
    c.data.channels = 1  # 1 or 3; images are converted to this
    c.data.batch_size = 32
    c.data.val_fraction = 0.1  # of the normal training images, held out for the threshold
    c.data.test_fraction = 0.3  # for sources without an official test split (digits)
    c.data.split_seed = 0  # fixed apart from `seed`, so data splits do not move with model seeds
    c.data.cache = True
    c.data.shuffle_buffer = 10_000
    c.data.data_dir = ""  # tfds data_dir (prepared data); "" = the tfds default
    c.data.tfds_name = "cifar10"  # for name=tfds: cifar10 | mnist | fashion_mnist | svhn_cropped
    c.data.root = ""  # for folders / mvtec
    # folders without labelled classes: one folder of normal (good) images, split into train,
    # validation and a normal test part (data.test_fraction); optional anomalies and their masks
    # (<mask_dir>/<stem of the anomalous image>*.png).
    c.data.normal_dir = ""
    c.data.abnormal_dir = ""
    c.data.mask_dir = ""
    c.data.category = ""  # for mvtec
    c.data.crop = "none"  # none | random | tile: training crops for images larger than image_size
    c.data.crop_fraction = 0.5  # crop=random: crop side as a fraction of the image's short side
    c.data.on_bad_file = "error"  # error | skip
    c.data.max_train = 0  # cap on training images (0 = all); keeps quick runs quick
    c.data.patch_size = 64  # textures: patch side in photo pixels (resized to image_size)
    c.data.train_patches = 600  # textures: train + validation patches (top 3/4 of the photo)
    c.data.test_patches = 200  # textures: test patches (bottom 1/4), half with synthetic defects
    # textures: a dark frame around every patch, each side up to this fraction of the patch wide,
    # drawn per image (0 = none): the varying borders of real inspection images.
    c.data.frame_border = 0.0

    c.model = ml_collections.ConfigDict()
    c.model.hypotheses = 4
    c.model.latent_dim = 16
    c.model.base_filters = 32
    c.model.max_filters = 256
    c.model.dense_units = 0  # hidden dense layer between conv and latent (0 = none)
    c.model.logvar_min = -6.0  # the per-pixel log-variance is squashed into [min, max]
    c.model.logvar_max = 2.0
    c.model.disc_base_filters = 32
    c.model.minibatch_std = True  # discriminator batch statistic against collapsed heads
    c.model.fused_heads = True  # all heads as one convolution (identical maths, faster)

    c.loss = ml_collections.ConfigDict()
    c.loss.wta = "sample"  # sample | pixel: granularity of the winner
    c.loss.eps = (
        0.05  # relaxation: the losers share this weight (0 = hard WTA; >0 stops dead heads)
    )
    c.loss.kl_weight = 1.0
    c.loss.adv_weight = 0.1  # 0 disables the discriminator
    c.loss.adv_hypotheses = "sample"  # sample: one random head per image to D; all: every head

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 50
    c.train.g_lr = 1e-3
    c.train.d_lr = 2e-4
    c.train.beta_1 = 0.5
    # Global gradient-norm clip for G and D (0 = off). With Adam it keeps the step direction and
    # removes the spikes of the per-pixel NLL; unclipped, 128 px runs collapsed.
    c.train.clip_norm = 1.0
    c.train.mixed_precision = (
        "auto"  # auto (bf16 on CPUs with native bf16) | none | bfloat16 | float16
    )
    # XLA: auto (time both, keep the faster) | true | false; a config file may also use the bools
    # True / False, so the field takes either type.
    c.train.jit_compile = config_dict.FieldReference("auto", field_type=object)
    c.train.deterministic = False
    # Automatic recovery: when a loss becomes NaN or infinite, or spikes (above the mean m of the
    # last 3 epochs by spike_factor * max(|m|, the largest epoch value so far, 1); 0 = off), roll
    # back to the last good epoch, multiply both learning rates by recovery_lr_factor and go on,
    # at most `recoveries` times.
    c.train.recoveries = 3
    c.train.recovery_lr_factor = 0.5
    c.train.spike_factor = 10.0
    # Training-health warnings: D's accuracy above health_d_acc on real and fake images, or one
    # head winning more than health_head_share of the images, for health_epochs epochs in a row.
    c.train.health_d_acc = 0.97
    c.train.health_head_share = 0.95
    c.train.health_epochs = 5
    c.train.verbose = 2  # keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch

    c.score = ml_collections.ConfigDict()
    c.score.aggregate = "sum"  # sum | mean | topk
    c.score.topk_fraction = 0.1
    # Inference on tiles at native resolution instead of the whole image resized to image_size:
    # auto (tiles when data.crop=tile) | none | tile.
    c.score.tiling = "auto"
    # Pixels between tile origins, dividing image_size; unset (None) = half a tile.
    c.score.tile_stride = config_dict.placeholder(int)
    c.score.tile_scale = 1.0  # images are scaled by this before tiling (1 = native resolution)
    # Gaussian blur (sigma, in the model's pixels) of the anomaly map used for localization
    # (maps, masks, pixel metrics); unset (None) = image_size / 32; 0 = off. The image score
    # aggregates the unblurred map.
    c.score.map_sigma = config_dict.placeholder(float)

    c.eval = ml_collections.ConfigDict()
    c.eval.every_epochs = 0  # AUROC callback period (0 = off)
    c.eval.threshold_quantile = 0.99
    c.eval.pixel_threshold_quantile = 0.999  # of the normal validation maps' pixels
    c.eval.report = True  # write figures under workdir/report/
    c.eval.classes = ""  # benchmark_classes / ablation: comma-separated classes ("" = every class)
    # ablation: comma-separated variants vae, vae-gan, mhp-wta-H, conad-H, in any case (the paper's
    # baselines as settings of this model); "" = all four with H = model.hypotheses.
    c.eval.variants = ""
    return c
