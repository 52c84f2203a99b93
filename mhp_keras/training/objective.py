"""ConAD's training objective, apart from the Keras model that owns the weights it trains.

The terms, as in Nguyen et al. (ICML 2019), Section 3:

* eq. (2), the multiple-hypotheses WTA reconstruction loss: the Gaussian NLL of x under the
  winning head (per image or per pixel), the losing heads sharing the weight `eps` (`vae_losses`);
* eq. (3), the VAE's KL(q(z|x) || N(0, I)), weighted by `kl_weight` (`vae_losses`);
* eq. (4), the discriminator's loss L_D: binary cross-entropy with real = x against three fake
  sources, decodings of z ~ N(0, I), decodings of z ~ q(z|x) and the best guess
  (`adversarial_losses`);
* eq. (5), the generator's objective WTA + KL + adv_weight * L_G, where L_G is the
  *non-saturating* form of -L_D (the fakes labelled real), which has the same fixed point but does
  not vanish when D wins early (`per_sample_losses`).

With `adv_hypotheses="sample"` each image's fake comes from one uniformly drawn head, an unbiased
estimate of the average over heads whose discriminator cost does not grow with H (prior samples
are decoded through their drawn head alone); "all" feeds D every head. "group" is the paper's
hypotheses discrimination (Section 4.2): D sees every input's K hypotheses side by side as one
group (and every prior z's), whose minibatch feature is computed within the group, against groups
of K real images and groups of K best guesses (`rolled_groups`), all in one D call; so hypotheses
that agree with each other look fake, which keeps them diverse.

Distribution: the losses are per sample and averaged over the *global* batch
(`tf.nn.compute_average_loss`), the random draws are stateless and replica-consistent
(`replica_random`) and the gradient is clipped by its global norm across replicas
(`clip_global`), so any number of replicas makes exactly the update one device would.

Functions of a `ConAD` (its sub-models and settings); `ConAD.train_step` and `test_step` call
`train_step` and `test_step` here.
"""

from __future__ import annotations

import tensorflow as tf

from mhp_keras.training import distribute, losses

RANDOM_PURPOSES = ("posterior", "prior", "heads")
LOSS_NAMES = ("loss", "recon", "kl", "g_adv", "d_loss", "d_acc_real", "d_acc_fake")


def bce(logits, label):
    """Per-sample sigmoid cross-entropy against a constant label, in float32: [B]."""
    logits = tf.cast(tf.reshape(logits, [-1]), tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits)


def step_counter(model):
    """The generator optimizer's step (0 before `compile`): the stateless draws' second seed."""
    optimizer = getattr(model, "g_optimizer", None)
    return optimizer.iterations if optimizer is not None else tf.constant(0, tf.int64)


def replica_random(model, kind, shape_tail, sampler):
    """Random draws for this replica's rows of the *global* batch, from a stateless seed.

    Every replica draws the whole global batch from the same (seed, step, purpose) and keeps its
    own rows, so training on N replicas sees exactly the noise that one device would, and a run
    is reproducible from `model.seed` alone, whatever the op order.
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    replica = context.replica_id_in_sync_group if context is not None else 0
    local = shape_tail[0]
    seed = tf.stack(
        [
            tf.constant(model.seed * len(RANDOM_PURPOSES) + RANDOM_PURPOSES.index(kind), tf.int64),
            tf.cast(step_counter(model), tf.int64),
        ]
    )
    full = sampler(tf.concat([[local * replicas], shape_tail[1:]], 0), seed)
    start = tf.cast(replica, tf.int32) * local
    return full[start : start + local]


def _normal(shape, seed):
    return tf.random.stateless_normal(shape, seed)


def decode_native(model, z, training):
    """(means, log_vars) in the heads' native layout [B, h, w, C, K]."""
    features = model.decoder_features(z, training=training)
    return model.decoder.get_layer("hypotheses").native(features)


def samples_one_head(model) -> bool:
    """Whether D sees one random head per image (else every head of every image)."""
    return model.adv_hypotheses == "sample" and model.hypotheses > 1


def fake_heads(model, batch):
    """The head whose decoding each image contributes as a fake, [B] int32."""
    return replica_random(
        model,
        "heads",
        tf.reshape(batch, [1]),
        lambda shape, seed: tf.random.stateless_uniform(
            shape, seed, minval=0, maxval=model.hypotheses, dtype=tf.int32
        ),
    )


def pick_fakes(model, means, heads):
    """The fakes D sees from native [B, h, w, C, K] means: head `heads[b]` of each image, or all
    K heads of every image, image-major."""
    if samples_one_head(model):
        return losses.take_last_axis(means, heads)
    shape = tf.shape(means)
    stacked = tf.transpose(means, [0, 4, 1, 2, 3])
    return tf.reshape(stacked, tf.stack([-1, shape[1], shape[2], shape[3]]))


def prior_fakes(model, z, heads, training):
    """Fakes decoded from prior z: the head `heads[b]` of image b, computed for that head alone,
    or (all heads, or K = 1) every head's means, image-major."""
    features = model.decoder_features(z, training=training)
    layer = model.decoder.get_layer("hypotheses")
    if samples_one_head(model):
        return layer.selected_means(features, heads)
    return pick_fakes(model, layer.means_only(features), heads)


def vae_losses(model, images, training):
    """The VAE terms of one batch, per sample: eq. (2)'s WTA NLL and eq. (3)'s KL.

    z is drawn from q(z|x) by the reparameterisation trick. Returns the per-sample `recon` (WTA
    NLL) and `kl` [B], `win` [B, K] (the share of each image, or of its pixels, that each head
    wins), and for the adversarial terms `mu`, the decoded `means` in the heads' native layout
    [B, h, w, C, K] and the `nll` [B, K, h, w].
    """
    mu, log_var = model.encoder(images, training=training)
    log_var = losses.bounded_log_var(log_var)
    noise = replica_random(model, "posterior", tf.shape(mu), _normal)
    z = mu + tf.exp(0.5 * log_var) * tf.cast(noise, mu.dtype)
    means, log_vars = decode_native(model, z, training)  # [B, h, w, C, K]
    # Only the NLL map (1/C of the means' size) moves its heads axis to the front.
    nll = tf.transpose(losses.gaussian_nll(images, means, log_vars, head_axis=4), [0, 3, 1, 2])
    win = tf.one_hot(losses.winner_index(nll, model.wta), model.hypotheses)
    if model.wta == "pixel":
        win = tf.reduce_mean(win, axis=[1, 2])
    return {
        "recon": losses.wta_loss(nll, model.wta, model.eps),
        "kl": losses.kl_to_standard_normal(mu, log_var),
        "win": win,
        "mu": mu,
        "means": means,
        "nll": nll,
    }


def rolled_groups(images, k):
    """Groups of k images for D, image-major [B * k, ...]: group b holds images b, b+1, ...,
    b+k-1 (mod B) of this batch, so every image leads one group of k distinct images (B >= k)."""
    batch = tf.shape(images)[0]
    index = (tf.range(batch)[:, None] + tf.range(k)[None, :]) % batch
    return tf.gather(images, tf.reshape(index, [-1]))


def _discriminate(model, real, fakes, training):
    """D's logits of the real batch and of each fake source. Under hypotheses discrimination
    every source comes in groups of K and one D call takes them all (groups stay aligned: each
    part is a multiple of K); otherwise each source is its own call, so that a batch-wide
    minibatch feature describes one source."""
    if model.adv_hypotheses != "group":
        return model.discriminator(real, training=training), [
            model.discriminator(f, training=training) for f in fakes
        ]
    k = model.hypotheses
    parts = [rolled_groups(real, k), *fakes[:2], rolled_groups(fakes[2], k)]
    # Under mixed precision the sources come in different dtypes; D casts its input itself.
    parts = [tf.cast(p, tf.float32) for p in parts]
    logits = model.discriminator(tf.concat(parts, 0), training=training)
    sizes = [tf.shape(p)[0] for p in parts]
    real_logits, *fake_logits = tf.split(logits, tf.stack(sizes), axis=0)
    return real_logits, fake_logits


def adversarial_losses(model, images, vae, training):
    """The adversarial terms of one batch, per sample, from `vae_losses`' decodings.

    D sees real = `images` against three fake sources: decodings of z ~ N(0, I), decodings of
    z ~ q(z|x) (one random head per image, or every head) and the best guess. Returns `d_loss`
    (eq. (4), D's binary cross-entropy), `g_adv` (the generator's non-saturating L_G of eq. (5):
    the fakes labelled real) and D's accuracies `d_acc_real`, `d_acc_fake`, each [B].
    """
    batch = tf.shape(images)[0]
    prior_z = replica_random(model, "prior", tf.stack([batch, model.latent_dim]), _normal)
    # Only drawn when D sees one head per image; otherwise every head is a fake.
    heads = fake_heads(model, batch) if samples_one_head(model) else None
    means = vae["means"]
    fakes = [
        prior_fakes(model, tf.cast(prior_z, vae["mu"].dtype), heads, training),
        pick_fakes(model, means, heads),
        losses.best_hypothesis(means, vae["nll"], model.wta, head_axis=4),
    ]
    real_logits, fake_logits = _discriminate(model, images, fakes, training)
    # Per-sample averages over each source's fakes (and groups), so the "all" and "group" modes
    # (K fakes an image) weigh the same as "sample".
    fake_d = [tf.reduce_mean(tf.reshape(bce(f, 0.0), [batch, -1]), 1) for f in fake_logits]
    fake_g = [tf.reduce_mean(tf.reshape(bce(f, 1.0), [batch, -1]), 1) for f in fake_logits]
    fake_right = [tf.cast(tf.reshape(f, [batch, -1]) < 0, tf.float32) for f in fake_logits]
    return {
        "d_loss": tf.reduce_mean(tf.reshape(bce(real_logits, 1.0), [batch, -1]), 1)
        + tf.add_n(fake_d) / len(fakes),
        "g_adv": tf.add_n(fake_g) / len(fakes),
        "d_acc_real": tf.reduce_mean(
            tf.cast(tf.reshape(real_logits, [batch, -1]) > 0, tf.float32), 1
        ),
        "d_acc_fake": tf.reduce_mean(tf.concat(fake_right, 1), 1),
    }


def per_sample_losses(model, images, training=False):
    """Every per-sample loss of one batch ([B] each, plus `win` [B, K]): what `train_step`
    averages over the global batch and `test_step` reports. `loss` is eq. (5)'s generator
    objective, WTA + kl_weight * KL + adv_weight * L_G."""
    vae = vae_losses(model, images, training)
    out = {name: vae[name] for name in ("recon", "kl", "win")}
    if model.adversarial:
        out.update(adversarial_losses(model, images, vae, training))
    else:
        zeros = tf.zeros([tf.shape(images)[0]], tf.float32)
        out.update(d_loss=zeros, g_adv=zeros, d_acc_real=zeros, d_acc_fake=zeros)
    out["loss"] = out["recon"] + model.kl_weight * out["kl"] + model.adv_weight * out["g_adv"]
    return out


def clip_global(grads, clip_norm):
    """`grads` clipped by the norm of the whole batch's gradient.

    Under a strategy with N replicas each replica holds only its part of the gradient (the
    optimizer sums them later), and clipping the parts by their own norms is not clipping the
    sum. So the parts are summed here first, clipped, and divided by N: the optimizer's sum then
    gives exactly the clipped global gradient.
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync if context is not None else 1
    if replicas > 1:
        present = [i for i, g in enumerate(grads) if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
        grads = list(grads)
        for i, g in zip(present, summed, strict=True):
            grads[i] = g
    grads, _ = tf.clip_by_global_norm(grads, clip_norm)
    if replicas > 1:
        grads = [None if g is None else g / replicas for g in grads]
    return grads


def apply_gradients(model, optimizer, tape, loss, variables):
    grads = tape.gradient(loss, variables)
    if model.clip_norm > 0:
        grads = clip_global(grads, model.clip_norm)
    optimizer.apply_gradients(zip(grads, variables))


def images_of(data):
    """The image batch of whatever `fit` passes: a dict row, an (x, y) tuple or the images."""
    if isinstance(data, dict):
        return data["image"]
    if isinstance(data, (tuple, list)):
        return data[0]
    return data


def update_metrics(model, out):
    """Feeds the step's per-sample losses to the model's trackers; returns the step's logs."""
    for tracker in model.metrics:  # the LOSS_NAMES trackers, then win_0 .. win_{K-1}
        if tracker.name in LOSS_NAMES:
            tracker.update_state(out[tracker.name])
        else:
            tracker.update_state(out["win"][:, int(tracker.name[len("win_") :])])
    return distribute.step_logs({m.name: m.result() for m in model.metrics})


def train_step(model, data):
    """One simultaneous update of G (encoder + decoder) and D from one forward pass.

    Unlike the keras.io DCGAN example, which runs D's step and then G's on fresh decodings, both
    tapes watch the same forward pass: the fakes D learns from are the decodings the WTA and KL
    terms are computed on, so a step decodes once instead of twice, and G's adversarial gradient
    is taken against the D of the same step (the simultaneous gradient form of the minimax game).
    """
    images = images_of(data)
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
        out = per_sample_losses(model, images, training=True)
        # Averaged over the global batch, so N replicas make the update one device would.
        g_loss = tf.nn.compute_average_loss(out["loss"])
        d_loss = tf.nn.compute_average_loss(out["d_loss"])
    # Train G on eq. (5): WTA + KL + adv_weight * L_G.
    apply_gradients(model, model.g_optimizer, g_tape, g_loss, model.generator_variables)
    # Train D on eq. (4): real images against the three fake sources.
    if model.adversarial:
        discriminator = model.discriminator.trainable_variables
        apply_gradients(model, model.d_optimizer, d_tape, d_loss, discriminator)
    return update_metrics(model, out)


def test_step(model, data):
    """The losses of one validation batch, without updates."""
    return update_metrics(model, per_sample_losses(model, images_of(data), training=False))
