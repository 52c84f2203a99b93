"""The full set of config keys with their defaults.

Every file under `configs/` starts from `base_config()` and changes only what its dataset needs, so
each key is documented once, here, and every key exists in every config (and so can be overridden
from the command line as `--config.section.key=value`).
"""

import ml_collections
from ml_collections import config_dict


def base_config() -> ml_collections.ConfigDict:
    """Every key with its default: the run-wide keys here, one section per helper below."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model_name = "conad"  # the TF Serving model name under workdir/export/
    c.data = _data_section()
    c.model = _model_section()
    c.loss = _loss_section()
    c.train = _train_section()
    c.score = _score_section()
    c.eval = _eval_section()
    return c


def _data_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.name = "digits"  # digits | textures | tfds | folders | mvtec
    s.normal_class = "0"  # class name (or index as text) that is normal
    s.image_size = 16  # power of two in [16, 256]
    s.channels = 1  # 1 or 3; images are converted to this
    s.batch_size = 32
    s.val_fraction = 0.1  # of the normal training images, held out for the threshold
    s.test_fraction = 0.3  # for sources without an official test split (digits)
    s.split_seed = 0  # fixed apart from `seed`, so data splits do not move with model seeds
    s.cache = True  # keep decoded images in memory after the first epoch
    s.shuffle_buffer = 10_000  # training shuffle buffer (capped at the image count unless tiling)
    s.data_dir = ""  # tfds data_dir (prepared data); "" = the tfds default
    s.tfds_name = "cifar10"  # for name=tfds: cifar10 | mnist | fashion_mnist | svhn_cropped
    s.root = ""  # for folders / mvtec
    # folders without labelled classes: one folder of normal (good) images, split into train,
    # validation and a normal test part (data.test_fraction); optional anomalies and their masks
    # (<mask_dir>/<stem of the anomalous image>*.png).
    s.normal_dir = ""
    s.abnormal_dir = ""
    s.mask_dir = ""
    s.category = ""  # for mvtec
    # none | random | tile | auto: training crops for images larger than image_size (auto = tile
    # when the median short side x score.tile_scale is >= 2 x image_size, else none).
    s.crop = "none"
    # crop=tile: random tiles drawn per training image and epoch (0 = every tile, every epoch).
    s.tiles_per_image = 0
    s.crop_fraction = 0.5  # crop=random: crop side as a fraction of the image's short side
    s.on_bad_file = "error"  # error | skip
    s.max_train = 0  # cap on training images (0 = all); keeps quick runs quick
    s.patch_size = 64  # textures: patch side in photo pixels (resized to image_size)
    s.train_patches = 600  # textures: train + validation patches (top 3/4 of the photo)
    s.test_patches = 200  # textures: test patches (bottom 1/4), half with synthetic defects
    # textures: a dark frame around every patch, each side up to this fraction of the patch wide,
    # drawn per image (0 = none): the varying borders of real inspection images.
    s.frame_border = 0.0
    # Whole-image mode: letterbox (long side to image_size, padded; the padding is never scored)
    # or squash (both sides to image_size). Identical for square images.
    s.resize = "letterbox"
    # A fixed camera's region of interest: one mask image, white = inspect (score.roi=mask).
    s.roi_mask = ""
    return s


def _model_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.hypotheses = 4
    s.latent_dim = 16  # per latent cell
    # One latent cell (a latent_dim vector) per this many pixels a side, so that the latent
    # grows with the image: a config tuned at 32 px keeps its capacity per pixel at 64 or 128 px.
    # 0 = one cell for the whole image (the keras.io VAE's dense latent; every model saved
    # before this key). Not the default: on tiles it reconstructs defects too
    # (docs/design.md#the-latent-grid).
    s.latent_cell_px = 0
    s.base_filters = 32
    s.max_filters = 256
    s.dense_units = 0  # hidden dense layer between conv and latent (0 = none)
    s.logvar_min = -6.0  # the per-pixel log-variance is squashed into [min, max]
    s.logvar_max = 2.0
    s.disc_base_filters = 32
    s.minibatch_std = True  # discriminator batch statistic against collapsed heads
    # Minibatch discrimination (Salimans et al. 2016): D's learnt closeness features, this many,
    # within each group under loss.adv_hypotheses=group or views, else over the batch (0 = none).
    s.minibatch_kernels = 0
    s.fused_heads = True  # all heads as one convolution (identical maths, faster)
    return s


def _loss_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.wta = "sample"  # sample | pixel: granularity of the winner
    s.eps = 0.05  # relaxation: the losers share this weight (0 = hard WTA; >0 stops dead heads)
    s.kl_weight = 1.0
    # 0 disables the discriminator. With adv_balance=adaptive: the adversarial gradient's norm
    # over the WTA NLL's on the decoder's last shared layer, kept so every step (D's share of
    # the generator's update, whatever the image size); with fixed: lambda itself in eq. (5).
    s.adv_weight = 0.1
    s.adv_balance = "adaptive"  # adaptive | fixed (see training/objective.py)
    # wta = the heads compete (MHP, ConAD); mdn = a mixture density network with mixing
    # coefficients from z (the paper's MDN-H baseline; training/mixture.py).
    s.mixture = "wta"
    # Fakes for D: sample = one random head per image; all = every head; group = every head, D
    # seeing each input's K hypotheses as one group (hypotheses discrimination, paper 4.2),
    # against groups of K different real images; views = the same against groups of K views of
    # one real image, shifted by up to a sixteenth of the side (training/fakes.py).
    s.adv_hypotheses = "sample"
    # Which fake sources each image gives D: every = all three of eq. (4) (3 fakes per real
    # image); split = one of the three, a third of the batch each (as many fakes as reals, about
    # half D's work per step; an unbiased estimate of eq. (4), but a pilot had one seed collapse:
    # docs/results.md#fake-sources-split-against-every).
    s.adv_sources = "every"
    # Evolving WTA (Makansi et al. 2019; training/evolving_wta.py): the best k heads share the
    # winner's weight in training, k halving from K to 1 (the WTA) by this epoch; 0 = off.
    s.evolving_wta_epochs = 0
    return s


def _train_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.epochs = 50
    s.g_lr = 1e-3
    s.d_lr = 2e-4
    s.beta_1 = 0.5
    # Global gradient-norm clip for G and D (0 = off). With Adam it keeps the step direction and
    # removes the spikes of the per-pixel NLL; unclipped, 128 px runs collapsed.
    s.clip_norm = 1.0
    s.mixed_precision = "auto"  # auto (bf16 on CPUs with native bf16) | none | bfloat16 | float16
    # XLA: auto (time both, keep the faster) | true | false; a config file may also use the bools
    # True / False, so the field takes either type.
    s.jit_compile = config_dict.FieldReference("auto", field_type=object)
    s.deterministic = False
    # Which epoch's weights are calibrated, saved, scored and exported: best_val = the epoch with
    # the lowest NLL on the held-out normal images (val_recon; the adversarial variants' NLL jumps
    # between epochs); last = the last epoch's (training/selection.py).
    s.keep_weights = "best_val"
    # Automatic recovery: when a loss becomes NaN or infinite, or spikes (above the mean m of the
    # last 3 epochs by spike_factor * max(|m|, the largest epoch value so far, 1); 0 = off), roll
    # back to the last good epoch, multiply both learning rates by recovery_lr_factor and go on,
    # at most `recoveries` times.
    s.recoveries = 3
    s.recovery_lr_factor = 0.5
    s.spike_factor = 10.0
    # Training-health warnings: D's accuracy above health_d_acc on real and fake images, or one
    # head winning more than health_head_share of the images, for health_epochs epochs in a row.
    s.health_d_acc = 0.97
    s.health_head_share = 0.95
    # ... or the discriminator's gradient share (adv_grad_share, training/diagnostics.py) below
    # this: D does not reach the generator.
    s.health_adv_share = 0.01
    # ... or a head with more than this many times the inputs' high-frequency energy
    # (head_sharpness_max): it draws a pattern, not an image.
    s.health_head_sharpness = 2.0
    s.health_epochs = 5
    s.verbose = 2  # keras fit verbosity: 0 silent, 1 progress bar, 2 one line per epoch
    return s


def _score_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.aggregate = "sum"  # sum | mean | topk (mean of the top fraction) | topk_sum (their sum)
    s.topk_fraction = 0.1
    # Inference on tiles at native resolution instead of the whole image resized to image_size:
    # auto (tiles when data.crop=tile) | none | tile.
    s.tiling = "auto"
    # Pixels between tile origins, dividing image_size; unset (None) = half a tile.
    s.tile_stride = config_dict.placeholder(int)
    # Images are scaled by this before tiling, in training (data.crop=tile) and in tiled scoring
    # alike, so the model scores at the scale it learnt (1 = native resolution).
    s.tile_scale = 1.0
    # Gaussian blur (sigma, in the model's pixels) of the anomaly map used for localization
    # (maps, masks, pixel metrics); unset (None) = image_size / 32; 0 = off. The image score
    # aggregates the unblurred map.
    s.map_sigma = config_dict.placeholder(float)
    # Region of interest: none | auto (leave out each image's uniform frame) | mask (data.roi_mask).
    # Pixels outside count in neither the image score nor the pixel metrics.
    s.roi = "none"
    s.roi_margin = 2  # pixels of the map left out inside the auto frame's edge
    return s


def _eval_section() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.every_epochs = 0  # AUROC callback period (0 = off)
    s.threshold_quantile = 0.99
    s.pixel_threshold_quantile = 0.999  # of the normal validation maps' pixels
    s.report = True  # write figures under workdir/report/
    s.classes = ""  # benchmark_classes / ablation: comma-separated classes ("" = every class)
    # ablation: comma-separated variants vae, vae-gan, mdn-H, mhp-H, mhp-wta-H, conad-H,
    # mdn+conad-H, any case (the paper's baselines as settings of this model); "" = all seven
    # with H = model.hypotheses.
    s.variants = ""
    return s
