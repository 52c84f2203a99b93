"""`ConAD`: the multiple-hypotheses VAE-GAN with winner-takes-all training, as one `keras.Model`.

Follows the keras.io VAE and DCGAN examples: functional sub-models, an overridden `compile` taking
one optimizer for the generator (encoder + decoder) and one for the discriminator, and a custom
`train_step` with `tf.GradientTape`. The paper's baselines come from the same code:
`adv_weight=0, hypotheses=1` is a VAE, `hypotheses=1` with adversarial training a VAE-GAN, and
`hypotheses>1, adv_weight=0` MHP-WTA.

Adversarial objective. The discriminator D minimises binary cross-entropy with real = x and three
kinds of fake: decodings of z ~ N(0, I), decodings of z ~ q(z|x), and the best guess (the winning
head's mean). The generator adds `adv_weight * L_G`, where L_G is the *non-saturating* form of
-L_D (fakes labelled real), which has the same fixed point but does not vanish when D wins early.
With `adv_hypotheses="sample"` each image's fake comes from one uniformly drawn head, an unbiased
estimate of the average over heads whose discriminator cost does not grow with H (and prior samples
are decoded through their drawn head alone); "all" feeds D every head.

Losses are per sample and reduced with `tf.nn.compute_average_loss`, i.e. over the global batch,
so any number of replicas under a `tf.distribute` strategy gives the same gradients.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mhp_keras.config.defaults import base_config
from mhp_keras.config.model_settings import DEFAULTS, conad_arguments, first_invalid
from mhp_keras.errors import DataError
from mhp_keras.models.decoder import build_decoder
from mhp_keras.models.discriminator import build_discriminator
from mhp_keras.models.encoder import build_encoder
from mhp_keras.scoring import calibration, tiling
from mhp_keras.training import losses

RANDOM_PURPOSES = ("posterior", "prior", "heads")
LOSS_NAMES = ("loss", "recon", "kl", "g_adv", "d_loss", "d_acc_real", "d_acc_fake")


def _multi_worker(strategy) -> bool:
    """Whether Keras reduces this strategy's logs across workers (more than one worker task).

    Keras decides this with the private `strategy.extended._in_multi_worker_mode()`; the public
    cluster spec gives the same answer (tests/test_distribute.py checks that they agree).
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")) > 1


def _bce(logits, label):
    """Per-sample sigmoid cross-entropy against a constant label, in float32: [B]."""
    logits = tf.cast(tf.reshape(logits, [-1]), tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits)


def default_optimizers():
    """Adam for G and D with the config's default learning rates and beta_1."""
    train = base_config().train
    return (
        keras.optimizers.Adam(train.g_lr, beta_1=train.beta_1),
        keras.optimizers.Adam(train.d_lr, beta_1=train.beta_1),
    )


@keras.saving.register_keras_serializable(package="mhp_keras")
class ConAD(keras.Model):
    """Encoder, H-head decoder and discriminator trained with WTA + KL + adversarial losses.

    Every default equals the experiment config's (`mhp_keras/config/defaults.py`), so
    `ConAD(hypotheses=8)` is the model `--config.model.hypotheses=8` trains. The config key of
    each argument is in brackets.

    Args:
        image_size: side of the square input images, a power of two in 16..256
            [data.image_size].
        channels: 1 (grey) or 3 (RGB) [data.channels].
        hypotheses: H, the number of decoder heads; 1 is a plain VAE decoder [model.hypotheses].
        latent_dim: size of z [model.latent_dim].
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
        fused_heads: compute all heads as one convolution (identical maths, faster)
            [model.fused_heads].
        head_channel_layout: how the fused heads' channels are ordered: "blocked" (current) or
            "interleaved" (models saved before the blocked layout). Not a config key.
        wta: winner per image ("sample") or per pixel ("pixel"); scoring uses the same [loss.wta].
        eps: epsilon-relaxation, the weight the losing heads share (0 = hard WTA) [loss.eps].
        kl_weight: weight of KL(q(z|x) || N(0, I)) [loss.kl_weight].
        adv_weight: weight of the adversarial term; 0 trains no discriminator [loss.adv_weight].
        adv_hypotheses: fakes for D from one random head per image ("sample") or from every
            head ("all") [loss.adv_hypotheses].
        score_aggregate: image score from the anomaly map: "sum", "mean" or "topk"
            [score.aggregate].
        topk_fraction: fraction of pixels "topk" sums (the paper's 10 %) [score.topk_fraction].
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
        clip_norm: global gradient-norm clip for G and D (0 = off) [train.clip_norm].
        seed: seed of the stateless random draws of the training step [seed].
        **kwargs: passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: an argument outside its range, named with its argument name.
    """

    def __init__(
        self,
        image_size=DEFAULTS["image_size"],
        channels=DEFAULTS["channels"],
        hypotheses=DEFAULTS["hypotheses"],
        latent_dim=DEFAULTS["latent_dim"],
        base_filters=DEFAULTS["base_filters"],
        max_filters=DEFAULTS["max_filters"],
        dense_units=DEFAULTS["dense_units"],
        logvar_min=DEFAULTS["logvar_min"],
        logvar_max=DEFAULTS["logvar_max"],
        disc_base_filters=DEFAULTS["disc_base_filters"],
        minibatch_std=DEFAULTS["minibatch_std"],
        fused_heads=DEFAULTS["fused_heads"],
        head_channel_layout="blocked",
        wta=DEFAULTS["wta"],
        eps=DEFAULTS["eps"],
        kl_weight=DEFAULTS["kl_weight"],
        adv_weight=DEFAULTS["adv_weight"],
        adv_hypotheses=DEFAULTS["adv_hypotheses"],
        score_aggregate=DEFAULTS["score_aggregate"],
        topk_fraction=DEFAULTS["topk_fraction"],
        tiling=DEFAULTS["tiling"],
        tile_stride=DEFAULTS["tile_stride"],
        tile_scale=DEFAULTS["tile_scale"],
        map_sigma=DEFAULTS["map_sigma"],
        clip_norm=DEFAULTS["clip_norm"],
        seed=DEFAULTS["seed"],
        **kwargs,
    ):
        super().__init__(**kwargs)
        arguments = {k: v for k, v in locals().items() if k in DEFAULTS}
        problem = first_invalid(arguments)
        if problem is not None:
            arg, expected = problem
            raise ValueError(f"ConAD {arg}={arguments[arg]!r}: expected {expected}.")
        self.image_size = int(image_size)
        self.channels = int(channels)
        self.hypotheses = int(hypotheses)
        self.latent_dim = int(latent_dim)
        self.base_filters = int(base_filters)
        self.max_filters = int(max_filters)
        self.dense_units = int(dense_units)
        self.logvar_min = float(logvar_min)
        self.logvar_max = float(logvar_max)
        self.disc_base_filters = int(disc_base_filters)
        self.minibatch_std = bool(minibatch_std)
        self.fused_heads = bool(fused_heads)
        self.head_channel_layout = head_channel_layout
        self.wta = wta
        self.eps = float(eps)
        self.kl_weight = float(kl_weight)
        self.adv_weight = float(adv_weight)
        self.adv_hypotheses = adv_hypotheses
        self.score_aggregate = score_aggregate
        self.topk_fraction = float(topk_fraction)
        self.tiling = tiling
        self.tile_stride = None if tile_stride is None else int(tile_stride)
        self.tile_scale = float(tile_scale)
        self.map_sigma = None if map_sigma is None else float(map_sigma)
        self.clip_norm = float(clip_norm)
        self.seed = int(seed)

        self.encoder = build_encoder(
            image_size, channels, latent_dim, base_filters, max_filters, dense_units
        )
        self.decoder = build_decoder(
            image_size,
            channels,
            latent_dim,
            hypotheses,
            base_filters,
            max_filters,
            dense_units,
            logvar_min,
            logvar_max,
            fused_heads,
            head_channel_layout,
        )
        # The decoder up to its heads, sharing its layers; private attributes are saved after
        # the public ones, so the weights stay stored under `decoder`.
        self._decoder_trunk = keras.Model(
            self.decoder.inputs[0], self.decoder.get_layer("hypotheses").input, name="decoder_trunk"
        )
        self.discriminator = build_discriminator(
            image_size, channels, disc_base_filters, max_filters, minibatch_std
        )
        # The decisions travel with the model (and into the SavedModel): the image threshold and
        # the pixel threshold are +inf until training picks them, so an uncalibrated model never
        # flags anything; the score scale sets how fast normalized_score rises around 0.5.
        self.threshold = self._calibration_weight("threshold", np.inf)
        self.pixel_threshold = self._calibration_weight("pixel_threshold", np.inf)
        self.score_scale = self._calibration_weight("score_scale", 1.0)
        self._trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES}
        self._win_trackers = [keras.metrics.Mean(name=f"win_{k}") for k in range(self.hypotheses)]
        self.built = True

    # -- configuration -------------------------------------------------------------------------

    @property
    def adversarial(self) -> bool:
        return self.adv_weight > 0

    @property
    def generator_variables(self):
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    def get_config(self):
        config = super().get_config()
        config.update({arg: getattr(self, arg) for arg in DEFAULTS})
        config["head_channel_layout"] = self.head_channel_layout
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # Models saved before the blocked head layout store their heads' kernels interleaved.
        config.setdefault("head_channel_layout", "interleaved")
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

    # -- forward passes ------------------------------------------------------------------------

    def call(self, images, training=False):
        """Hypothesis means and log-variances decoded from the posterior mean, [B, K, h, w, C]."""
        mu, _ = self.encoder(images, training=training)
        return self.decoder(mu, training=training)

    def _replica_random(self, kind, shape_tail, sampler):
        """Random draws for this replica's rows of the *global* batch, from a stateless seed.

        Every replica draws the whole global batch from the same (seed, step, purpose) and keeps
        its own rows, so training on N replicas sees exactly the noise that one device would, and
        a run is reproducible from `seed` alone, whatever the op order.
        """
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        replica = context.replica_id_in_sync_group if context is not None else 0
        local = shape_tail[0]
        seed = tf.stack(
            [
                tf.constant(
                    self.seed * len(RANDOM_PURPOSES) + RANDOM_PURPOSES.index(kind), tf.int64
                ),
                tf.cast(self._step_counter(), tf.int64),
            ]
        )
        full = sampler(tf.concat([[local * replicas], shape_tail[1:]], 0), seed)
        start = tf.cast(replica, tf.int32) * local
        return full[start : start + local]

    def _step_counter(self):
        optimizer = getattr(self, "g_optimizer", None)
        return optimizer.iterations if optimizer is not None else tf.constant(0, tf.int64)

    def _decode_native(self, z, training):
        """(means, log_vars) in the heads' native layout [B, h, w, C, K]."""
        features = self._decoder_trunk(z, training=training)
        return self.decoder.get_layer("hypotheses").native(features)

    @property
    def _samples_one_head(self) -> bool:
        """Whether D sees one random head per image (else every head of every image)."""
        return self.adv_hypotheses == "sample" and self.hypotheses > 1

    def _fake_heads(self, batch):
        """The head whose decoding each image contributes as a fake, [B] int32."""
        return self._replica_random(
            "heads",
            tf.reshape(batch, [1]),
            lambda shape, seed: tf.random.stateless_uniform(
                shape, seed, minval=0, maxval=self.hypotheses, dtype=tf.int32
            ),
        )

    def _prior_fakes(self, z, heads, training):
        """Fakes decoded from prior z: the head `heads[b]` of image b, computed for that head
        alone, or (all heads, or K = 1) every head's means, image-major."""
        features = self._decoder_trunk(z, training=training)
        layer = self.decoder.get_layer("hypotheses")
        if self._samples_one_head:
            return layer.selected_means(features, heads)
        return self._pick_fakes(layer.means_only(features), heads)

    def _pick_fakes(self, means, heads):
        """The fakes D sees from native [B, h, w, C, K] means: head `heads[b]` of each image, or
        all K heads of every image, image-major."""
        if self._samples_one_head:
            return losses.take_last_axis(means, heads)
        shape = tf.shape(means)
        stacked = tf.transpose(means, [0, 4, 1, 2, 3])
        return tf.reshape(stacked, tf.stack([-1, shape[1], shape[2], shape[3]]))

    def vae_losses(self, images, training):
        """The VAE terms of one batch, per sample: posterior sample, WTA NLL and KL.

        Returns the per-sample `recon` (WTA NLL) and `kl` [B], `win` [B, K] (the share of each
        image, or of its pixels, that each head wins), and for the adversarial terms `mu`, the
        decoded `means` in the heads' native layout [B, h, w, C, K] and the `nll` [B, K, h, w].
        """
        mu, log_var = self.encoder(images, training=training)
        log_var = losses.bounded_log_var(log_var)
        noise = self._replica_random(
            "posterior", tf.shape(mu), lambda shape, seed: tf.random.stateless_normal(shape, seed)
        )
        z = mu + tf.exp(0.5 * log_var) * tf.cast(noise, mu.dtype)
        means, log_vars = self._decode_native(z, training)  # [B, h, w, C, K]
        # Only the NLL map (1/C of the means' size) moves its heads axis to the front.
        nll = tf.transpose(losses.gaussian_nll(images, means, log_vars, head_axis=4), [0, 3, 1, 2])
        win = tf.one_hot(losses.winner_index(nll, self.wta), self.hypotheses)
        if self.wta == "pixel":
            win = tf.reduce_mean(win, axis=[1, 2])
        return {
            "recon": losses.wta_loss(nll, self.wta, self.eps),
            "kl": losses.kl_to_standard_normal(mu, log_var),
            "win": win,
            "mu": mu,
            "means": means,
            "nll": nll,
        }

    def adversarial_losses(self, images, vae, training):
        """The adversarial terms of one batch, per sample, from `vae_losses`' decodings.

        D sees real = `images` against three fake sources: decodings of z ~ N(0, I), decodings of
        z ~ q(z|x) (one random head per image, or every head) and the best guess. Returns
        `d_loss` (D's binary cross-entropy), `g_adv` (the generator's non-saturating term: the
        fakes labelled real) and D's accuracies `d_acc_real`, `d_acc_fake`, each [B].
        """
        batch = tf.shape(images)[0]
        prior_z = self._replica_random(
            "prior",
            tf.stack([batch, self.latent_dim]),
            lambda shape, seed: tf.random.stateless_normal(shape, seed),
        )
        # Only drawn when D sees one head per image; otherwise every head is a fake.
        heads = self._fake_heads(batch) if self._samples_one_head else None
        means = vae["means"]
        fakes = [
            self._prior_fakes(tf.cast(prior_z, vae["mu"].dtype), heads, training),
            self._pick_fakes(means, heads),
            losses.best_hypothesis(means, vae["nll"], self.wta, head_axis=4),
        ]
        real_logits = self.discriminator(images, training=training)
        fake_logits = [self.discriminator(f, training=training) for f in fakes]
        # Per-sample averages over each source's fakes, so the "all" mode (K fakes an image)
        # weighs the same as "sample".
        fake_d = [tf.reduce_mean(tf.reshape(_bce(f, 0.0), [batch, -1]), 1) for f in fake_logits]
        fake_g = [tf.reduce_mean(tf.reshape(_bce(f, 1.0), [batch, -1]), 1) for f in fake_logits]
        fake_right = [tf.cast(tf.reshape(f, [batch, -1]) < 0, tf.float32) for f in fake_logits]
        return {
            "d_loss": _bce(real_logits, 1.0) + tf.add_n(fake_d) / len(fakes),
            "g_adv": tf.add_n(fake_g) / len(fakes),
            "d_acc_real": tf.cast(tf.reshape(real_logits, [-1]) > 0, tf.float32),
            "d_acc_fake": tf.reduce_mean(tf.concat(fake_right, 1), 1),
        }

    def per_sample_losses(self, images, training=False):
        """Every per-sample loss of one batch ([B] each, plus `win` [B, K]): what `train_step`
        averages over the global batch and `test_step` reports. `loss` is the generator's
        objective, WTA + kl_weight * KL + adv_weight * L_G."""
        vae = self.vae_losses(images, training)
        out = {name: vae[name] for name in ("recon", "kl", "win")}
        if self.adversarial:
            out.update(self.adversarial_losses(images, vae, training))
        else:
            zeros = tf.zeros([tf.shape(images)[0]], tf.float32)
            out.update(d_loss=zeros, g_adv=zeros, d_acc_real=zeros, d_acc_fake=zeros)
        out["loss"] = out["recon"] + self.kl_weight * out["kl"] + self.adv_weight * out["g_adv"]
        return out

    # -- training ------------------------------------------------------------------------------

    def _apply(self, optimizer, tape, loss, variables):
        grads = tape.gradient(loss, variables)
        if self.clip_norm > 0:
            grads = self._clip_global(grads)
        optimizer.apply_gradients(zip(grads, variables))

    def _clip_global(self, grads):
        """`grads` clipped by the norm of the whole batch's gradient.

        Under a strategy with N replicas each replica holds only its part of the gradient (the
        optimizer sums them later), and clipping the parts by their own norms is not clipping
        the sum. So the parts are summed here first, clipped, and divided by N: the optimizer's
        sum then gives exactly the clipped global gradient.
        """
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas > 1:
            present = [i for i, g in enumerate(grads) if g is not None]
            summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
            grads = list(grads)
            for i, g in zip(present, summed, strict=True):
                grads[i] = g
        grads, _ = tf.clip_by_global_norm(grads, self.clip_norm)
        if replicas > 1:
            grads = [None if g is None else g / replicas for g in grads]
        return grads

    def _update_metrics(self, out):
        for name, tracker in self._trackers.items():
            tracker.update_state(out[name])
        for k, tracker in enumerate(self._win_trackers):
            tracker.update_state(out["win"][:, k])
        results = {m.name: m.result() for m in self.metrics}
        if _multi_worker(tf.distribute.get_strategy()):
            # Keras reduces logs across workers with reduce(MEAN, axis=0), which fails on scalars
            # (keras 3.15); a length-1 axis makes that reduction a plain mean over replicas.
            results = {name: value[None] for name, value in results.items()}
        return results

    @staticmethod
    def _images(data):
        if isinstance(data, dict):
            return data["image"]
        if isinstance(data, (tuple, list)):
            return data[0]
        return data

    def train_step(self, data):
        """One simultaneous update of G (encoder + decoder) and D from one forward pass.

        Unlike the keras.io DCGAN example, which runs D's step and then G's on fresh decodings,
        both tapes watch the same forward pass: the fakes D learns from are the decodings the WTA
        and KL terms are computed on, so a step decodes once instead of twice, and G's
        adversarial gradient is taken against the D of the same step (the simultaneous gradient
        form of the minimax game).
        """
        images = self._images(data)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            out = self.per_sample_losses(images, training=True)
            # Averaged over the global batch, so N replicas make the update one device would.
            g_loss = tf.nn.compute_average_loss(out["loss"])
            d_loss = tf.nn.compute_average_loss(out["d_loss"])
        # Train G: WTA + KL + adv_weight * L_G.
        self._apply(self.g_optimizer, g_tape, g_loss, self.generator_variables)
        # Train D: real images against the three fake sources.
        if self.adversarial:
            self._apply(self.d_optimizer, d_tape, d_loss, self.discriminator.trainable_variables)
        return self._update_metrics(out)

    def test_step(self, data):
        return self._update_metrics(self.per_sample_losses(self._images(data), training=False))

    # -- scoring -------------------------------------------------------------------------------

    @tf.function(reduce_retracing=True)
    def analyze(self, images):
        """Everything scoring needs for a [B, h, w, C] float batch in [0, 1], deterministically.

        z is the posterior mean. Returns anomaly_score [B] (`score_aggregate` of the WTA NLL per
        pixel), anomaly_map [B, h, w] (that NLL blurred by `blur` pixels, for localization),
        raw_map (unblurred), winner_index ([B] or, for pixel-wise WTA, [B, h, w]),
        best_hypothesis [B, h, w, C] and hypotheses [B, K, h, w, C].
        """
        images = tf.cast(images, tf.float32)
        means, log_vars = self(images, training=False)
        nll = losses.gaussian_nll(images, means, log_vars)
        amap = losses.anomaly_map(nll, self.wta)
        return {
            "anomaly_score": losses.aggregate_map(amap, self.score_aggregate, self.topk_fraction),
            "anomaly_map": losses.smooth_map(amap, self.blur),
            "raw_map": amap,
            "winner_index": losses.winner_index(nll, self.wta),
            "best_hypothesis": tf.cast(losses.best_hypothesis(means, nll, self.wta), tf.float32),
            "hypotheses": tf.cast(means, tf.float32),
        }

    @property
    def blur(self) -> float:
        """The anomaly map's Gaussian blur in pixels (`map_sigma`, or image_size / 32)."""
        return self.image_size / 32.0 if self.map_sigma is None else self.map_sigma

    @property
    def stride(self) -> int:
        """Pixels between tile origins in tiled inference (`tile_stride`, or half a tile)."""
        return self.tile_stride or max(1, self.image_size // 2)

    def _tile_outputs(self, tiles):
        """What tiled inference stitches from a batch of tiles, plus each tile's head votes."""
        out = self.analyze(tiles)
        votes = tf.one_hot(out["winner_index"], self.hypotheses)
        if self.wta == "pixel":
            votes = tf.reduce_sum(votes, axis=[1, 2])
        return {
            "anomaly_map": out["anomaly_map"],
            "raw_map": out["raw_map"],
            "best_hypothesis": out["best_hypothesis"],
            "votes": votes,
        }

    @tf.function(reduce_retracing=True)
    def analyze_tiled(self, image):
        """One float image [H, W, C] in [0, 1] of any size, scored on `image_size` tiles.

        The image is scaled by `tile_scale`, cut into tiles `stride` apart (see
        `mhp_keras.scoring.tiling`), each tile is scored as by `analyze`, and the maps and best
        guesses are stitched back, averaged where tiles overlap, to the image's own size. Returns
        anomaly_score [] (`score_aggregate` of the stitched map at the tiles' scale),
        anomaly_map [H, W], best_hypothesis [H, W, C] and winner_index [] (the head that won
        the most tiles; for pixel-wise WTA, the most pixels).
        """
        image = tf.cast(image, tf.float32)
        size = tf.shape(image)[:2]
        if self.tile_scale != 1.0:
            scaled_size = tf.cast(tf.round(tf.cast(size, tf.float32) * self.tile_scale), tf.int32)
            image = tf.image.resize(image, tf.maximum(scaled_size, 1), antialias=True)
            image = tf.clip_by_value(image, 0.0, 1.0)
        out = tiling.tiled_apply(
            image,
            self._tile_outputs,
            self.image_size,
            self.stride,
            {"anomaly_map": [], "raw_map": [], "best_hypothesis": [self.channels]},
            self.hypotheses,
        )
        amap, best = out["anomaly_map"], out["best_hypothesis"]
        raw = out["raw_map"][None]
        score = losses.aggregate_map(raw, self.score_aggregate, self.topk_fraction)[0]
        if self.tile_scale != 1.0:  # maps and reconstructions at the image's own size
            amap = tf.image.resize(amap[..., None], size)[..., 0]
            best = tf.clip_by_value(tf.image.resize(best, size), 0.0, 1.0)
        return {
            "anomaly_score": score,
            "anomaly_map": amap,
            "best_hypothesis": best,
            "winner_index": tf.argmax(out["votes"], output_type=tf.int32),
        }

    def _check_image(self, image, index: int) -> np.ndarray:
        """One image for scoring as float32 [h, w, C]; a DataError names what is wrong."""
        image = np.asarray(image)
        if image.ndim == 2 and self.channels == 1:
            image = image[..., None]
        if image.ndim != 3 or image.shape[-1] != self.channels or 0 in image.shape:
            raise DataError(
                f"image {index} has shape {image.shape}; expected [height, width, "
                f"{self.channels}] with float pixels in [0, 1]."
            )
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise DataError(
                f"images at index [{index}] contain NaN or Inf; expected finite pixel values "
                "in [0, 1]."
            )
        return image

    def check_images(self, images) -> np.ndarray:
        """Validates a numpy batch for whole-image scoring: rank, channels, finiteness. Returns
        float32 [N, image_size, image_size, C], resized as the data pipeline does."""
        images = np.asarray(images)
        if images.ndim == 3 and self.channels == 1:
            images = images[..., None]
        expected = f"[N, {self.image_size}, {self.image_size}, {self.channels}]"
        if images.ndim != 4:
            raise DataError(
                f"images have shape {images.shape}; expected a batch shaped {expected}."
            )
        if images.shape[-1] != self.channels:
            raise DataError(
                f"images have {images.shape[-1]} channels; this model expects {self.channels} "
                f"(shape {expected})."
            )
        images = images.astype(np.float32)
        bad = ~np.isfinite(images).reshape(len(images), -1).all(axis=1)
        if bad.any():
            raise DataError(
                f"images at index {np.flatnonzero(bad)[:10].tolist()} contain NaN or Inf; "
                "expected finite pixel values in [0, 1]."
            )
        if images.shape[1:3] != (self.image_size, self.image_size):
            # The same antialiased resize as the data pipeline and the SavedModel signature.
            from mhp_keras.data.pipeline import resize_image

            images = resize_image(images, self.image_size).numpy()
        return images

    def score(self, images, batch_size=64):
        """Anomaly scores [N] and maps for float images in [0, 1] (numpy); NaN or Inf raise a
        DataError.

        Without tiling, images of another size are resized to the model's size and the maps are
        [N, image_size, image_size]. With `tiling="tile"`, `images` may also be a list of images
        of different sizes; each is scored at its own size (`analyze_tiled`) and its map has that
        size: the maps are one array if all images share a size, else a list.
        """
        if self.tiling == "tile":
            scores, maps = [], []
            for index, image in enumerate(images):
                out = self.analyze_tiled(tf.constant(self._check_image(image, index)))
                scores.append(float(out["anomaly_score"].numpy()))
                maps.append(out["anomaly_map"].numpy())
            same = len({m.shape for m in maps}) <= 1
            return np.asarray(scores, np.float32), (np.stack(maps) if maps and same else maps)
        images = self.check_images(images)
        scores, maps = [], []
        for start in range(0, len(images), batch_size):
            out = self.analyze(tf.constant(images[start : start + batch_size]))
            scores.append(out["anomaly_score"].numpy())
            maps.append(out["anomaly_map"].numpy())
        if not scores:
            size = self.image_size
            return np.zeros([0], np.float32), np.zeros([0, size, size], np.float32)
        return np.concatenate(scores), np.concatenate(maps)

    def decide(self, scores, maps) -> dict:
        """The model's decisions for scores [N] and maps (as `score` returns them), numpy:
        is_anomalous [N], normalized_score [N] in [0, 1] (>= 0.5 exactly when anomalous) and
        anomaly_mask (map >= the pixel threshold), with the stored thresholds."""
        values = (self.threshold, self.pixel_threshold, self.score_scale)
        out = calibration.decisions(np.asarray(scores), np.zeros([0]), *values)
        masks = [calibration.decisions([0.0], m, *values)["anomaly_mask"].numpy() for m in maps]
        return {
            "is_anomalous": out["is_anomalous"].numpy(),
            "normalized_score": out["normalized_score"].numpy(),
            "anomaly_mask": np.stack(masks) if isinstance(maps, np.ndarray) else masks,
        }

    def set_calibration(self, threshold, pixel_threshold, score_scale) -> None:
        """Stores the image threshold, pixel threshold and score scale (see
        `mhp_keras.scoring.calibration`); they are saved with the model and frozen into its
        exports."""
        self.threshold.assign(float(threshold))
        self.pixel_threshold.assign(float(pixel_threshold))
        self.score_scale.assign(float(score_scale))

    def fit_threshold(
        self, normal_images, quantile=None, pixel_quantile=None, batch_size=64
    ) -> float:
        """Calibrates the decisions on `normal_images`, float images in [0, 1] that the model
        did not train on, and returns the image threshold.

        The threshold is the `quantile` (default: the config's `eval.threshold_quantile`, 0.99)
        of their scores, so about 1 - quantile of normal images will be flagged; the pixel
        threshold is the `pixel_quantile` (default `eval.pixel_threshold_quantile`) of their
        maps' pixels. Both are saved with the model and frozen into its exports.
        """
        defaults = base_config().eval
        quantile = defaults.threshold_quantile if quantile is None else quantile
        if pixel_quantile is None:
            pixel_quantile = defaults.pixel_threshold_quantile
        scores, maps = self.score(normal_images, batch_size=batch_size)
        if len(scores) == 0:
            raise ValueError("fit_threshold needs at least one normal image.")
        values = calibration.calibrate(scores, maps, quantile, pixel_quantile)
        self.set_calibration(**values)
        return values["threshold"]

    def _calibration_weight(self, name: str, value: float):
        return self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(value),
            trainable=False,
            name=name,
        )

    def load_own_variables(self, store):
        """Loads the calibration weights. Models saved before the pixel threshold and the score
        scale existed hold the image threshold alone; the others keep their defaults."""
        own = [self.threshold, self.pixel_threshold, self.score_scale]
        if len(store) > len(own):
            raise ValueError(
                f"ConAD holds {len(own)} calibration values but the saved model has {len(store)}."
            )
        for index in range(len(store)):
            own[index].assign(store[str(index)])

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
