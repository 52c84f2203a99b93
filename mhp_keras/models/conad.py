"""`ConAD`: the multiple-hypotheses VAE-GAN with winner-takes-all training, as one `keras.Model`.

Follows the keras.io VAE and DCGAN examples: functional sub-models (built here, or passed in),
an overridden `compile` taking one optimizer for G (encoder + decoder) and one for D, and a
custom `train_step`. The paper's baselines are settings of the same model (docs/design.md).

This module is the Keras surface only: arguments, sub-models, configuration, compile, metrics and
the calibration weights. The training objective (WTA NLL, KL, the adversarial terms, the
replica-consistent random draws and clipping) is `mhp_keras.training.objective`; scoring, maps,
decisions and thresholds are `mhp_keras.scoring.scorer`.
"""

from __future__ import annotations

import keras
import numpy as np

from mhp_keras.config.defaults import base_config
from mhp_keras.config.model_settings import (
    DEFAULTS,
    GROUPED_HYPOTHESES,
    conad_arguments,
    first_invalid,
    upgrade_saved_config,
)
from mhp_keras.models.conad_scoring import ConADScoring
from mhp_keras.models.decoder import build_decoder
from mhp_keras.models.discriminator import build_discriminator
from mhp_keras.models.encoder import build_encoder
from mhp_keras.models.shapes import latent_side as cells_a_side
from mhp_keras.scoring.regions import encode_mask
from mhp_keras.scoring.scorer import Scorer
from mhp_keras.training import objective

SUB_MODELS = ("encoder", "decoder", "discriminator")
# The settings each sub-model's builder takes, in its argument order.
_IMAGE = ("image_size", "channels")
_FILTERS = ("base_filters", "max_filters", "dense_units")
ENCODER_ARGS = (*_IMAGE, "latent_dim", *_FILTERS, "latent_side")
DECODER_ARGS = (*_IMAGE, "latent_dim", "hypotheses", *_FILTERS, "logvar_min", "logvar_max")
DECODER_ARGS += ("fused_heads", "head_channel_layout", "latent_side")
DISC_ARGS = (*_IMAGE, "disc_base_filters", "max_filters", "minibatch_std", "disc_group_size")
DISC_ARGS += ("minibatch_kernels",)


# How each argument is stored (the strings are stored as given).
CASTS = dict.fromkeys(("minibatch_std", "fused_heads"), bool) | {
    "tile_stride": lambda value: None if value is None else int(value),
    "map_sigma": lambda value: None if value is None else float(value),
    "roi_mask": encode_mask,
}
CASTS |= {arg: type(DEFAULTS[arg]) for arg in DEFAULTS if type(DEFAULTS[arg]) in (int, float)}


def default_optimizers():
    """Adam for G and D with the config's default learning rates and beta_1."""
    train = base_config().train
    return (
        keras.optimizers.Adam(train.g_lr, beta_1=train.beta_1),
        keras.optimizers.Adam(train.d_lr, beta_1=train.beta_1),
    )


@keras.saving.register_keras_serializable(package="mhp_keras")
class ConAD(ConADScoring, keras.Model):
    """Encoder, H-head decoder and discriminator trained with WTA + KL + adversarial losses.

    Every default equals the experiment config's (`mhp_keras/config/defaults.py`), so
    `ConAD(hypotheses=8)` is the model `--config.model.hypotheses=8` trains. The config key of
    each argument is in brackets.

    Args:
        image_size: side of the square input images, a power of two in 16..256
            [data.image_size].
        channels: 1 (grey) or 3 (RGB) [data.channels].
        hypotheses: H, the number of decoder heads; 1 is a plain VAE decoder [model.hypotheses].
        latent_dim: size of z per latent cell [model.latent_dim].
        latent_cell_px: one latent cell (latent_dim values, read from its own 4x4 block of the
            bottleneck) per this many pixels a side, so that the latent grows with the image;
            0 = one dense latent vector for the whole image [model.latent_cell_px].
        base_filters: encoder/decoder filters at the image-side stage, doubling per stage
            [model.base_filters].
        max_filters: cap on the filters of any stage [model.max_filters].
        dense_units: a hidden dense layer between the convolutions and z (0 = none)
            [model.dense_units].
        logvar_min: lower bound of the per-pixel log-variance [model.logvar_min].
        logvar_max: upper bound of the per-pixel log-variance [model.logvar_max].
        disc_base_filters: the discriminator's filters at its first stage
            [model.disc_base_filters].
        minibatch_std: give the discriminator a minibatch-stddev feature, against heads that
            collapse onto one output [model.minibatch_std].
        minibatch_kernels: give the discriminator this many minibatch-discrimination features
            (Salimans et al. 2016), learnt closeness within each group of one input's hypotheses
            under adv_hypotheses="group" or "views", else over the batch; 0 = none
            [model.minibatch_kernels].
        fused_heads: compute all heads as one convolution (identical maths, faster)
            [model.fused_heads].
        head_channel_layout: how the fused heads' channels are ordered: "blocked" (current) or
            "interleaved" (models saved before the blocked layout). Not a config key.
        wta: winner per image ("sample") or per pixel ("pixel"); scoring uses the same [loss.wta].
        eps: epsilon-relaxation, the weight the losing heads share (0 = hard WTA) [loss.eps].
        kl_weight: weight of KL(q(z|x) || N(0, I)) [loss.kl_weight].
        adv_weight: weight of the adversarial term; 0 trains no discriminator. Under the adaptive
            balance, the adversarial gradient's share on the last shared layer [loss.adv_weight].
        adv_balance: "adaptive" (lambda set every step to keep that share, Esser et al. 2021)
            or "fixed" (lambda = adv_weight) [loss.adv_balance].
        mixture: "wta" (the heads compete winner-takes-all) or "mdn" (a mixture density network
            with mixing coefficients from z, the paper's MDN-H; needs wta="sample") [loss.mixture].
        adv_hypotheses: D's fakes: one random head per image ("sample"), every head ("all"), or
            every head in groups of one input's K, against groups of K different real images
            ("group") or of K shifted views of one real image ("views") [loss.adv_hypotheses].
        adv_sources: which fake sources each image gives D: one, a third of the batch each
            ("split"), or all three ("every") [loss.adv_sources].
        score_aggregate: image score from the anomaly map: "sum", "mean", "topk" (mean of the
            top fraction) or "topk_sum" (their sum, the paper's) [score.aggregate].
        topk_fraction: fraction of pixels "topk" takes (the paper's 10 %) [score.topk_fraction].
        tiling: "tile" scores images of any size at native resolution on image_size tiles and
            stitches the maps (`score`, `analyze_tiled` and the SavedModel); "none" resizes each
            image to image_size [score.tiling; its "auto" tiles when data.crop="tile"].
        tile_stride: pixels between tile origins, dividing image_size; None = half a tile
            [score.tile_stride].
        tile_scale: images are scaled by this before tiling (1 = native resolution)
            [score.tile_scale].
        map_sigma: Gaussian blur, in pixels, of the anomaly map used for localization (maps,
            masks, pixel metrics); None = image_size / 32, 0 = off. The image score aggregates
            the unblurred WTA NLL [score.map_sigma].
        resize, roi, roi_mask, roi_margin: whole images letterboxed or squashed [data.resize];
            the region of interest (`mhp_keras.scoring.regions`) [score.roi, data.roi_mask,
            score.roi_margin]; roi_mask is a path, an array or a stored mask.
        clip_norm: global gradient-norm clip for G and D (0 = off) [train.clip_norm].
        seed: seed of the stateless random draws of the training step [seed].
        encoder, decoder, discriminator: sub-models to use instead of building them from the
            arguments, as the keras.io examples pass theirs in: an encoder image -> [mu,
            log_var], a decoder z -> [means [B, K, h, w, C], log_vars] with its heads in a
            `HypothesisHeads` layer named "hypotheses" (`mhp_keras.models.decoder`), and a
            discriminator image -> logit. Their shapes must fit the arguments; they are saved
            with the model.
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: an argument outside its range, named with its argument name, or a given
            sub-model whose shape does not fit.
    """

    def __init__(
        self,
        image_size=DEFAULTS["image_size"],
        channels=DEFAULTS["channels"],
        hypotheses=DEFAULTS["hypotheses"],
        latent_dim=DEFAULTS["latent_dim"],
        latent_cell_px=DEFAULTS["latent_cell_px"],
        base_filters=DEFAULTS["base_filters"],
        max_filters=DEFAULTS["max_filters"],
        dense_units=DEFAULTS["dense_units"],
        logvar_min=DEFAULTS["logvar_min"],
        logvar_max=DEFAULTS["logvar_max"],
        disc_base_filters=DEFAULTS["disc_base_filters"],
        minibatch_std=DEFAULTS["minibatch_std"],
        minibatch_kernels=DEFAULTS["minibatch_kernels"],
        fused_heads=DEFAULTS["fused_heads"],
        head_channel_layout="blocked",
        wta=DEFAULTS["wta"],
        eps=DEFAULTS["eps"],
        kl_weight=DEFAULTS["kl_weight"],
        adv_weight=DEFAULTS["adv_weight"],
        adv_hypotheses=DEFAULTS["adv_hypotheses"],
        adv_sources=DEFAULTS["adv_sources"],
        adv_balance=DEFAULTS["adv_balance"],
        mixture=DEFAULTS["mixture"],
        score_aggregate=DEFAULTS["score_aggregate"],
        topk_fraction=DEFAULTS["topk_fraction"],
        tiling=DEFAULTS["tiling"],
        tile_stride=DEFAULTS["tile_stride"],
        tile_scale=DEFAULTS["tile_scale"],
        map_sigma=DEFAULTS["map_sigma"],
        resize=DEFAULTS["resize"],
        roi=DEFAULTS["roi"],
        roi_mask=DEFAULTS["roi_mask"],
        roi_margin=DEFAULTS["roi_margin"],
        clip_norm=DEFAULTS["clip_norm"],
        seed=DEFAULTS["seed"],
        encoder=None,
        decoder=None,
        discriminator=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        arguments = {k: v for k, v in locals().items() if k in DEFAULTS}
        problem = first_invalid(arguments)
        if problem is not None:
            arg, expected = problem
            raise ValueError(f"ConAD {arg}={arguments[arg]!r}: expected {expected}.")
        for arg, value in arguments.items():
            setattr(self, arg, CASTS.get(arg, lambda v: v)(value))
        self.head_channel_layout = head_channel_layout
        # Which sub-models were passed in: get_config saves those, the others are rebuilt.
        given = (encoder, decoder, discriminator)
        self._given = {n: m is not None for n, m in zip(SUB_MODELS, given, strict=True)}
        self.encoder = self._sub_model(encoder, build_encoder, ENCODER_ARGS)
        self.decoder = self._sub_model(decoder, build_decoder, DECODER_ARGS)
        # The decoder up to its heads, sharing its layers; private attributes are saved after
        # the public ones, so the weights stay stored under `decoder`.
        self._decoder_trunk = keras.Model(
            self.decoder.inputs[0], self.decoder.get_layer("hypotheses").input, name="decoder_trunk"
        )
        self.discriminator = self._sub_model(discriminator, build_discriminator, DISC_ARGS)
        self._check_sub_models()
        # MDN-H: mixing coefficients pi(z) over the heads (mhp_keras.training.mixture); "wta"
        # models have no such layer, so their saved weights are unchanged.
        self.mixer = None
        if self.mixture == "mdn":
            self.mixer = keras.layers.Dense(self.hypotheses, name="mixture_logits")
            self.mixer.build((None, self.z_dim))
        # The decisions travel with the model (and into the SavedModel): the image threshold and
        # the pixel threshold are +inf until training picks them, so an uncalibrated model never
        # flags anything; the score scale sets how fast normalized_score rises around 0.5.
        self.threshold = self._calibration_weight("threshold", np.inf)
        self.pixel_threshold = self._calibration_weight("pixel_threshold", np.inf)
        self.score_scale = self._calibration_weight("score_scale", 1.0)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in objective.LOSS_NAMES}
        self._win_trackers = [keras.metrics.Mean(name=f"win_{k}") for k in range(self.hypotheses)]
        self._scorer = Scorer(self)
        # How many of the best heads share the WTA's winner weight in the training step: 1 is
        # the WTA itself. A training schedule, not a setting of the model (so neither saved nor
        # in get_config): `EvolvingWTA` raises it for the first epochs and retraces the step.
        self.wta_top_k = 1
        self.built = True

    @property
    def latent_side(self) -> int:  # latent cells a side
        return cells_a_side(self.image_size, self.latent_cell_px)

    @property
    def z_dim(self) -> int:  # the size of the flat z: latent_dim per cell
        return self.latent_side**2 * self.latent_dim

    @property
    def disc_group_size(self) -> int:  # D's feature groups: K, or 0 (the whole batch)
        return self.hypotheses if self.adv_hypotheses in GROUPED_HYPOTHESES else 0

    def _sub_model(self, given, build, arguments):
        """`given`, or the sub-model `build` makes from these settings of this model."""
        return build(*(getattr(self, arg) for arg in arguments)) if given is None else given

    def _check_sub_models(self) -> None:
        """Given sub-models must fit the arguments; a ValueError shows the shapes that do not."""
        image = (None, self.image_size, self.image_size, self.channels)
        latent, heads = (None, self.z_dim), (None, self.hypotheses, *image[1:])
        expected = {
            "encoder": ([image], [latent, latent]),
            "decoder": ([latent], [heads, heads]),
            "discriminator": ([image], [(None, 1)]),
        }
        for name, shapes in expected.items():
            model = getattr(self, name)
            got = tuple([tuple(t.shape) for t in ends] for ends in (model.inputs, model.outputs))
            if got != shapes:
                raise ValueError(
                    f"ConAD {name}={model.name!r} has (inputs, outputs) shaped {got}; expected "
                    f"{shapes} for these arguments."
                )

    # -- configuration -------------------------------------------------------------------------

    @property
    def adversarial(self) -> bool:
        return self.adv_weight > 0

    @property
    def generator_variables(self):
        mixer = self.mixer.trainable_variables if self.mixer is not None else []
        return self.encoder.trainable_variables + self.decoder.trainable_variables + mixer

    def get_config(self):
        config = super().get_config()
        config.update({arg: getattr(self, arg) for arg in DEFAULTS})
        config["head_channel_layout"] = self.head_channel_layout
        for name in SUB_MODELS:
            if self._given[name]:
                config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        return config

    @classmethod
    def from_config(cls, config):
        config = upgrade_saved_config(config)  # older saves: squash and topk = topk_sum
        # Models saved before the blocked head layout store their heads' kernels interleaved.
        config.setdefault("head_channel_layout", "interleaved")
        for name in SUB_MODELS:
            if config.get(name) is not None:
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)

    def compile(self, g_optimizer=None, d_optimizer=None, **kwargs):
        """Two optimizers: `g_optimizer` for encoder + decoder, `d_optimizer` for the discriminator.

        Both are built here on their own variables, so neither allocates slots for the other's.
        """
        default_g, default_d = default_optimizers()
        self.g_optimizer = g_optimizer or default_g
        self.d_optimizer = d_optimizer or default_d
        self.g_optimizer.build(self.generator_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)
        super().compile(optimizer=self.g_optimizer, **kwargs)

    def get_compile_config(self):
        if not getattr(self, "compiled", False):
            return None
        return {
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
        }

    def compile_from_config(self, config):
        """Recreates both optimizers on load, so a loaded `.keras` model resumes training."""
        self.compile(
            g_optimizer=keras.saving.deserialize_keras_object(config["g_optimizer"]),
            d_optimizer=keras.saving.deserialize_keras_object(config["d_optimizer"]),
        )

    @property
    def metrics(self):
        return list(self._trackers.values()) + self._win_trackers

    # -- forward passes and training -----------------------------------------------------------

    def call(self, images, training=False):
        """Hypothesis means and log-variances decoded from the posterior mean, [B, K, h, w, C]."""
        mu, _ = self.encoder(images, training=training)
        return self.decoder(mu, training=training)

    def decoder_features(self, z, training=False):
        """The decoder's features just before its heads (what the heads' layer decodes)."""
        return self._decoder_trunk(z, training=training)

    def per_sample_losses(self, images, training=False, adv_scale=None):
        """Every per-sample loss of one batch (`mhp_keras.training.objective.per_sample_losses`)."""
        return objective.per_sample_losses(self, images, training=training, adv_scale=adv_scale)

    def train_step(self, data):
        """One simultaneous update of G and D (`mhp_keras.training.objective.train_step`)."""
        return objective.train_step(self, data)

    def test_step(self, data):
        return objective.test_step(self, data)

    def export(self, filepath, format="tf_saved_model", verbose=True, **kwargs):
        """Keras' `Model.export`: for "tf_saved_model" (the default), the TF Serving SavedModel of
        `mhp_keras.serving.export` in exactly `filepath`, with its `serving_default` (uint8 images)
        and `serving_bytes` (encoded images) signatures and the threshold frozen in.
        Works on a model that was never called. Other formats go to Keras."""
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose, **kwargs)
        if kwargs:
            raise ValueError(
                f"ConAD.export got {sorted(kwargs)}: the serving signatures are fixed "
                "(see mhp_keras.serving.export); no input_signature or other options are taken."
            )
        from mhp_keras.serving.export import write_saved_model

        path = write_saved_model(self, str(filepath))
        if verbose:
            print(f"Saved the ConAD serving model (serving_default, serving_bytes) at {path}")
        return path


def build_conad(config) -> ConAD:
    """A ConAD from an experiment config (data, model, loss, score and train sections)."""
    return ConAD(**conad_arguments(config))
