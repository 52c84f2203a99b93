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

from mhp_keras import losses
from mhp_keras.errors import ConfigError, DataError
from mhp_keras.models.decoder import build_decoder
from mhp_keras.models.discriminator import build_discriminator
from mhp_keras.models.encoder import build_encoder
from mhp_keras.models.shapes import num_stages

ADV_HYPOTHESES = ("sample", "all")
RANDOM_PURPOSES = ("posterior", "prior", "heads")


def _multi_worker(strategy) -> bool:
    extended = getattr(strategy, "extended", None)
    in_multi_worker = getattr(extended, "_in_multi_worker_mode", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and bool(
        in_multi_worker and in_multi_worker()
    )


def _bce(logits, label):
    """Per-sample sigmoid cross-entropy against a constant label, in float32: [B]."""
    logits = tf.cast(tf.reshape(logits, [-1]), tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits)


def validate_model_args(hypotheses, latent_dim, image_size, channels, wta, eps, aggregate, topk):
    """Raises ConfigError naming the key of the first invalid model, loss or score value."""
    num_stages(image_size)
    if int(hypotheses) < 1:
        raise ConfigError(f"model.hypotheses={hypotheses}: expected an integer >= 1.")
    if int(latent_dim) < 1:
        raise ConfigError(f"model.latent_dim={latent_dim}: expected an integer >= 1.")
    if channels not in (1, 3):
        raise ConfigError(f"data.channels={channels}: expected 1 (grey) or 3 (RGB).")
    if wta not in losses.WTA_MODES:
        raise ConfigError(f"loss.wta={wta!r}: expected one of {list(losses.WTA_MODES)}.")
    if not 0.0 <= float(eps) < 1.0:
        raise ConfigError(f"loss.eps={eps}: expected a value in [0, 1).")
    if aggregate not in losses.AGGREGATES:
        raise ConfigError(
            f"score.aggregate={aggregate!r}: expected one of {list(losses.AGGREGATES)}."
        )
    if not 0.0 < float(topk) <= 1.0:
        raise ConfigError(f"score.topk_fraction={topk}: expected a fraction in (0, 1].")


@keras.saving.register_keras_serializable(package="mhp_keras")
class ConAD(keras.Model):
    """Encoder, H-head decoder and discriminator trained with WTA + KL + adversarial losses."""

    def __init__(
        self,
        image_size=32,
        channels=3,
        hypotheses=4,
        latent_dim=16,
        base_filters=32,
        max_filters=256,
        dense_units=0,
        logvar_min=-6.0,
        logvar_max=2.0,
        disc_base_filters=32,
        minibatch_std=True,
        fused_heads=True,
        head_channel_layout="blocked",
        wta="sample",
        eps=0.0,
        kl_weight=1.0,
        adv_weight=0.1,
        adv_hypotheses="sample",
        score_aggregate="sum",
        topk_fraction=0.1,
        clip_norm=0.0,
        seed=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        validate_model_args(
            hypotheses, latent_dim, image_size, channels, wta, eps, score_aggregate, topk_fraction
        )
        if adv_hypotheses not in ADV_HYPOTHESES:
            raise ConfigError(
                f"loss.adv_hypotheses={adv_hypotheses!r}: expected one of {list(ADV_HYPOTHESES)}."
            )
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
        # The decision threshold travels with the model (and into the SavedModel); +inf until
        # training picks one, so an unthresholded model never flags anything.
        self.threshold = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(np.inf),
            trainable=False,
            name="threshold",
        )
        self._trackers = {
            name: keras.metrics.Mean(name=name)
            for name in (
                "loss",
                "recon",
                "kl",
                "g_adv",
                "d_loss",
                "d_acc_real",
                "d_acc_fake",
            )
        }
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
        config.update(
            image_size=self.image_size,
            channels=self.channels,
            hypotheses=self.hypotheses,
            latent_dim=self.latent_dim,
            base_filters=self.base_filters,
            max_filters=self.max_filters,
            dense_units=self.dense_units,
            logvar_min=self.logvar_min,
            logvar_max=self.logvar_max,
            disc_base_filters=self.disc_base_filters,
            minibatch_std=self.minibatch_std,
            fused_heads=self.fused_heads,
            head_channel_layout=self.head_channel_layout,
            wta=self.wta,
            eps=self.eps,
            kl_weight=self.kl_weight,
            adv_weight=self.adv_weight,
            adv_hypotheses=self.adv_hypotheses,
            score_aggregate=self.score_aggregate,
            topk_fraction=self.topk_fraction,
            clip_norm=self.clip_norm,
            seed=self.seed,
        )
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
        self.g_optimizer = g_optimizer or keras.optimizers.Adam(1e-3, beta_1=0.5)
        self.d_optimizer = d_optimizer or keras.optimizers.Adam(2e-4, beta_1=0.5)
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

    def _compute_losses(self, images, training):
        """All per-sample losses of one batch, plus what the metrics need."""
        mu, log_var = self.encoder(images, training=training)
        noise = self._replica_random(
            "posterior", tf.shape(mu), lambda shape, seed: tf.random.stateless_normal(shape, seed)
        )
        noise = tf.cast(noise, mu.dtype)
        z = mu + tf.exp(0.5 * log_var) * noise
        means, log_vars = self._decode_native(z, training)  # [B, h, w, C, K]
        # Only the NLL map (1/C of the means' size) moves its heads axis to the front.
        nll = tf.transpose(losses.gaussian_nll(images, means, log_vars, head_axis=4), [0, 3, 1, 2])
        # Fraction of the batch (or, pixel-wise, of each image's pixels) each head wins: [B, K].
        win = tf.one_hot(losses.winner_index(nll, self.wta), self.hypotheses)
        if self.wta == "pixel":
            win = tf.reduce_mean(win, axis=[1, 2])
        out = {
            "recon": losses.wta_loss(nll, self.wta, self.eps),
            "kl": losses.kl_to_standard_normal(mu, log_var),
            "win": win,
        }
        batch = tf.shape(images)[0]
        if self.adversarial:
            prior_z = self._replica_random(
                "prior",
                tf.stack([batch, self.latent_dim]),
                lambda shape, seed: tf.random.stateless_normal(shape, seed),
            )
            # Only drawn when D sees one head per image; otherwise every head is a fake.
            heads = self._fake_heads(batch) if self._samples_one_head else None
            fakes = [
                self._prior_fakes(tf.cast(prior_z, mu.dtype), heads, training),
                self._pick_fakes(means, heads),
                losses.best_hypothesis(means, nll, self.wta, head_axis=4),
            ]
            real_logits = self.discriminator(images, training=training)
            fake_logits = [self.discriminator(f, training=training) for f in fakes]
            # Per-sample averages over each source's fakes, so the "all" mode (K fakes an image)
            # weighs the same as "sample".
            fake_d = [tf.reduce_mean(tf.reshape(_bce(f, 0.0), [batch, -1]), 1) for f in fake_logits]
            fake_g = [tf.reduce_mean(tf.reshape(_bce(f, 1.0), [batch, -1]), 1) for f in fake_logits]
            out["d_loss"] = _bce(real_logits, 1.0) + tf.add_n(fake_d) / len(fakes)
            out["g_adv"] = tf.add_n(fake_g) / len(fakes)
            out["d_acc_real"] = tf.cast(tf.reshape(real_logits, [-1]) > 0, tf.float32)
            out["d_acc_fake"] = tf.reduce_mean(
                tf.concat([tf.cast(tf.reshape(f, [-1]) < 0, tf.float32) for f in fake_logits], 0)
            )
        else:
            zeros = tf.zeros([batch], tf.float32)
            out.update(d_loss=zeros, g_adv=zeros, d_acc_real=zeros, d_acc_fake=zeros)
        out["loss"] = out["recon"] + self.kl_weight * out["kl"] + self.adv_weight * out["g_adv"]
        return out

    # -- training ------------------------------------------------------------------------------

    def _apply(self, optimizer, tape, loss, variables):
        grads = tape.gradient(loss, variables)
        if self.clip_norm > 0:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm)
        optimizer.apply_gradients(zip(grads, variables))

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
        images = self._images(data)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            out = self._compute_losses(images, training=True)
            g_loss = tf.nn.compute_average_loss(out["loss"])
            d_loss = tf.nn.compute_average_loss(out["d_loss"])
        self._apply(self.g_optimizer, g_tape, g_loss, self.generator_variables)
        if self.adversarial:
            self._apply(self.d_optimizer, d_tape, d_loss, self.discriminator.trainable_variables)
        return self._update_metrics(out)

    def test_step(self, data):
        return self._update_metrics(self._compute_losses(self._images(data), training=False))

    # -- scoring -------------------------------------------------------------------------------

    @tf.function(reduce_retracing=True)
    def analyze(self, images):
        """Everything scoring needs for a [B, h, w, C] float batch in [0, 1], deterministically.

        z is the posterior mean. Returns anomaly_score [B], anomaly_map [B, h, w] (the WTA NLL per
        pixel), winner_index ([B] or, for pixel-wise WTA, [B, h, w]), best_hypothesis
        [B, h, w, C] and hypotheses [B, K, h, w, C].
        """
        images = tf.cast(images, tf.float32)
        means, log_vars = self(images, training=False)
        nll = losses.gaussian_nll(images, means, log_vars)
        amap = losses.anomaly_map(nll, self.wta)
        return {
            "anomaly_score": losses.aggregate_map(amap, self.score_aggregate, self.topk_fraction),
            "anomaly_map": amap,
            "winner_index": losses.winner_index(nll, self.wta),
            "best_hypothesis": tf.cast(losses.best_hypothesis(means, nll, self.wta), tf.float32),
            "hypotheses": tf.cast(means, tf.float32),
        }

    def check_images(self, images) -> np.ndarray:
        """Validates a numpy batch for scoring: rank, channels, finiteness. Returns float32."""
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
        """Anomaly scores [N] and maps [N, h, w] (numpy) for float images in [0, 1].

        Images of another size are resized to the model's size; NaN or Inf raise a DataError.
        """
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


def build_conad(config) -> ConAD:
    """A ConAD from an experiment config (data, model, loss, score and train sections)."""
    return ConAD(
        image_size=config.data.image_size,
        channels=config.data.channels,
        hypotheses=config.model.hypotheses,
        latent_dim=config.model.latent_dim,
        base_filters=config.model.base_filters,
        max_filters=config.model.max_filters,
        dense_units=config.model.dense_units,
        logvar_min=config.model.logvar_min,
        logvar_max=config.model.logvar_max,
        disc_base_filters=config.model.disc_base_filters,
        minibatch_std=config.model.minibatch_std,
        fused_heads=config.model.get("fused_heads", True),
        wta=config.loss.wta,
        eps=config.loss.eps,
        kl_weight=config.loss.kl_weight,
        adv_weight=config.loss.adv_weight,
        adv_hypotheses=config.loss.adv_hypotheses,
        score_aggregate=config.score.aggregate,
        topk_fraction=config.score.topk_fraction,
        clip_norm=config.train.clip_norm,
        seed=config.seed,
    )
