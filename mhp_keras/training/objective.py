"""ConAD's training objective, apart from the Keras model that owns the weights it trains.

The terms, as in Nguyen et al. (ICML 2019), Section 3:

* eq. (2), the multiple-hypotheses WTA reconstruction loss: the Gaussian NLL of x under the
  winning head (per image or per pixel), the losing heads sharing the weight `eps` (`vae_losses`);
* eq. (3), the VAE's KL(q(z|x) || N(0, I)), weighted by `kl_weight` (`vae_losses`);
* eq. (4), the discriminator's loss L_D: binary cross-entropy with real = x against three fake
  sources, decodings of z ~ N(0, I), decodings of z ~ q(z|x) and the best guess
  (`adversarial_losses`); with `adv_sources="split"` each image of the batch gives one of the
  three instead, a third of the batch each, which halves D's work per step and keeps as many
  fakes as reals (`source_rows`);
* eq. (5), the generator's objective WTA + KL + lambda * L_G, where L_G is the
  *non-saturating* form of -L_D (the fakes labelled real), which has the same fixed point but does
  not vanish when D wins early (`per_sample_losses`).

The adversarial weight lambda is set by `mhp_keras.training.balance` ("adaptive": so that D's
gradient on the decoder's last shared layer is `adv_weight` times the NLL's, whatever the image
size; "fixed": lambda = adv_weight).

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

from mhp_keras.training import distribute, losses, mixture
from mhp_keras.training.balance import (
    adversarial_scale,
    balance_positions,
    balance_variables,
    loss_scale,
    scale_from_gradients,
)

RANDOM_PURPOSES = ("posterior", "prior", "heads")
LOSS_NAMES = ("loss", "recon", "kl", "g_adv", "d_loss", "d_acc_real", "d_acc_fake", "adv_scale")


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
    """The VAE terms of one batch, per sample: eq. (2)'s WTA NLL (or, for `mixture="mdn"`, the
    mixture NLL of `mhp_keras.training.mixture`) and eq. (3)'s KL.

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
    out = {"kl": losses.kl_to_standard_normal(mu, log_var), "mu": mu, "means": means, "nll": nll}
    if model.mixture == "mdn":
        # The mixture NLL; the heads' shares are their responsibilities.
        log_pi = mixture.log_weights(model.mixer(z, training=training))
        best = mixture.responsible_head(nll, log_pi)
        recon = mixture.mixture_nll(nll, log_pi)
        return out | {"recon": recon, "win": mixture.responsibilities(nll, log_pi), "best": best}
    win = tf.one_hot(losses.winner_index(nll, model.wta), model.hypotheses)
    if model.wta == "pixel":
        win = tf.reduce_mean(win, axis=[1, 2])
    return out | {"recon": losses.wta_loss(nll, model.wta, model.eps), "win": win}


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


def best_guess(model, vae):
    """The best guess [B, h, w, C]: the winning head's mean (the most responsible one for MDN)."""
    if "best" in vae:
        return losses.take_last_axis(vae["means"], vae["best"])
    return losses.best_hypothesis(vae["means"], vae["nll"], model.wta, head_axis=4)


def source_rows(model, batch):
    """Which of the batch's rows give D each fake source, as (start, stop) per source: under
    `adv_sources="split"` the first, second and last third give a prior decoding, a posterior
    decoding and a best guess respectively; under "every" (None) every row gives all three.

    The batches are shuffled, so which image falls in which third is random from epoch to epoch;
    and the three thirds' fakes average, over the batch, to an unbiased estimate of eq. (4)'s mean
    over the three sources, with as many fakes as real images for about half of D's cost. A
    batch of fewer than three images shares rows between sources (a source with no row would be
    an empty D call, which TensorFlow's convolutions reject).
    """
    if model.adv_sources == "every":
        return None
    bounds = []
    for i in range(3):
        start = tf.minimum((i * batch) // 3, batch - 1)
        bounds.append((start, tf.maximum(((i + 1) * batch) // 3, start + 1)))
    return bounds


def fakes_per_image(model) -> list[int]:
    """How many D inputs each image gives, per source (prior, posterior, best guess) and for the
    real images: K for every head or a group of K, else 1."""
    k = 1 if model.adv_hypotheses == "sample" else model.hypotheses
    group = k if model.adv_hypotheses == "group" else 1
    return [k, k, group, group]


def adversarial_losses(model, images, vae, training):
    """The adversarial terms of one batch, per sample, from `vae_losses`' decodings.

    D sees real = `images` against three fake sources: decodings of z ~ N(0, I), decodings of
    z ~ q(z|x) (one random head per image, or every head) and the best guess, from a third of the
    rows each or from every row (`source_rows`). Returns `d_loss` (eq. (4), D's binary
    cross-entropy), `g_adv` (the generator's non-saturating L_G of eq. (5): the fakes labelled
    real) and D's accuracies `d_acc_real`, `d_acc_fake`, each [B].
    """
    batch = tf.shape(images)[0]
    bounds = source_rows(model, batch)

    def rows(x, source):
        return x if bounds is None or x is None else x[bounds[source][0] : bounds[source][1]]

    prior_z = replica_random(model, "prior", tf.stack([batch, model.latent_dim]), _normal)
    # Only drawn when D sees one head per image; otherwise every head is a fake.
    heads = fake_heads(model, batch) if samples_one_head(model) else None
    prior_z = tf.cast(rows(prior_z, 0), vae["mu"].dtype)
    fakes = [
        prior_fakes(model, prior_z, rows(heads, 0), training),
        pick_fakes(model, rows(vae["means"], 1), rows(heads, 1)),
        rows(best_guess(model, vae), 2),
    ]
    real_logits, fake_logits = _discriminate(model, images, fakes, training)
    *per_fake, per_real = fakes_per_image(model)

    # Per-image means over each image's D inputs (its K heads, or its group), so the "all" and
    # "group" modes weigh the same as "sample"; the widths are static, so an empty third of a
    # tiny batch reshapes to [0, m].
    def per_image(values, width):
        return tf.reduce_mean(tf.reshape(values, [-1, width]), 1)

    def over_sources(values):
        """Per row [B]: the mean over the sources it gave (its own one under split, unless the
        batch is tiny; all three under every)."""
        if bounds is None:
            return tf.add_n(values) / len(values)
        placed = [((start, batch - stop),) for start, stop in bounds]
        total = tf.add_n([tf.pad(v, p) for v, p in zip(values, placed)])
        count = tf.add_n([tf.pad(tf.ones_like(v), p) for v, p in zip(values, placed)])
        return total / count

    right = [tf.cast(f < 0, tf.float32) for f in fake_logits]
    return {
        "d_loss": per_image(bce(real_logits, 1.0), per_real)
        + over_sources([per_image(bce(f, 0.0), m) for f, m in zip(fake_logits, per_fake)]),
        "g_adv": over_sources([per_image(bce(f, 1.0), m) for f, m in zip(fake_logits, per_fake)]),
        "d_acc_real": per_image(tf.cast(tf.reshape(real_logits, [-1]) > 0, tf.float32), per_real),
        "d_acc_fake": over_sources(
            [per_image(tf.reshape(r, [-1]), m) for r, m in zip(right, per_fake)]
        ),
    }


def per_sample_losses(model, images, training=False, adv_scale=None):
    """Every per-sample loss of one batch ([B] each, plus `win` [B, K]): what `train_step`
    averages over the global batch and `test_step` reports. `loss` is eq. (5)'s generator
    objective, WTA + kl_weight * KL + lambda * L_G, with lambda = `adv_scale` (default: the
    fixed adv_weight; `train_step` fills it in afterwards under the adaptive balance)."""
    vae = vae_losses(model, images, training)
    out = {name: vae[name] for name in ("recon", "kl", "win")}
    if model.adversarial:
        out.update(adversarial_losses(model, images, vae, training))
    else:
        zeros = tf.zeros([tf.shape(images)[0]], tf.float32)
        out.update(d_loss=zeros, g_adv=zeros, d_acc_real=zeros, d_acc_fake=zeros)
    set_generator_loss(model, out, model.adv_weight if adv_scale is None else adv_scale)
    return out


def set_generator_loss(model, out, adv_scale) -> None:
    """Fills `loss` (eq. (5), per sample) and `adv_scale` (lambda, per sample for the trackers)."""
    adv_scale = tf.cast(adv_scale, tf.float32) if model.adversarial else tf.constant(0.0)
    out["adv_scale"] = tf.fill(tf.shape(out["recon"]), adv_scale)
    out["loss"] = out["recon"] + model.kl_weight * out["kl"] + adv_scale * out["g_adv"]


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


def apply_gradients(model, optimizer, tape, targets, weights, variables):
    """One optimizer step on the gradient of sum_i weights[i] * targets[i] (scalars), taken in one
    backward pass, of the loss scaled for float16 and clipped by its unscaled global norm."""
    scale = loss_scale(optimizer)
    output_gradients = [tf.cast(w, tf.float32) * scale for w in weights]
    grads = tape.gradient(targets, variables, output_gradients=output_gradients)
    step(model, optimizer, grads, variables)


def step(model, optimizer, grads, variables):
    """The optimizer's update from gradients of the loss-scaled objective, clipped by their
    unscaled global norm."""
    if model.clip_norm > 0:
        grads = clip_global(grads, model.clip_norm * loss_scale(optimizer))
    optimizer.apply_gradients(zip(grads, variables))


def adaptive_generator_step(model, tape, vae, g_adv, variables):
    """G's update under the adaptive balance, from two backward passes over the generator: the
    gradients of the VAE terms and of L_G (of the loss-scaled terms), whose slices on the balance
    layer give lambda (the KL does not reach the decoder, so the VAE slice is the NLL's), then
    grad VAE + lambda * grad L_G. Equal to one backward pass on VAE + lambda * L_G with lambda
    from separate partial passes, but D's input gradient is taken once instead of twice."""
    seed = loss_scale(model.g_optimizer)
    vae_grads = tape.gradient(vae, variables, output_gradients=seed)
    adv_grads = tape.gradient(g_adv, variables, output_gradients=seed)
    at = balance_positions(model, variables)
    scale = scale_from_gradients(model, [vae_grads[i] for i in at], [adv_grads[i] for i in at])
    grads = [
        a
        if b is None
        else b * tf.cast(scale, b.dtype)
        if a is None
        else a + b * tf.cast(scale, b.dtype)
        for a, b in zip(vae_grads, adv_grads, strict=True)
    ]
    step(model, model.g_optimizer, grads, variables)
    return scale


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
    adaptive = model.adversarial and model.adv_balance == "adaptive"
    with tf.GradientTape(persistent=adaptive) as g_tape, tf.GradientTape() as d_tape:
        out = per_sample_losses(model, images, training=True)
        # Averaged over the global batch, so N replicas make the update one device would.
        nll = tf.nn.compute_average_loss(out["recon"])
        vae = nll + model.kl_weight * tf.nn.compute_average_loss(out["kl"])
        g_adv = tf.nn.compute_average_loss(out["g_adv"])
        d_loss = tf.nn.compute_average_loss(out["d_loss"])
    # Train G on eq. (5): WTA + KL + lambda * L_G.
    generator = model.generator_variables
    if model.adversarial:
        if adaptive:
            scale = adaptive_generator_step(model, g_tape, vae, g_adv, generator)
        else:
            scale = tf.constant(model.adv_weight, tf.float32)
            apply_gradients(model, model.g_optimizer, g_tape, [vae, g_adv], [1.0, scale], generator)
        set_generator_loss(model, out, scale)
        # Train D on eq. (4): real images against the three fake sources.
        discriminator = model.discriminator.trainable_variables
        apply_gradients(model, model.d_optimizer, d_tape, [d_loss], [1.0], discriminator)
    else:
        apply_gradients(model, model.g_optimizer, g_tape, [vae], [1.0], generator)
    del g_tape
    return update_metrics(model, out)


def test_step(model, data):
    """The losses of one validation batch, without updates; under the adaptive balance lambda is
    this batch's, as in training."""
    images = images_of(data)
    if not model.adversarial or model.adv_balance == "fixed":
        return update_metrics(model, per_sample_losses(model, images, training=False))
    with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
        tape.watch(balance_variables(model))
        out = per_sample_losses(model, images, training=False)
        nll = tf.nn.compute_average_loss(out["recon"])
        g_adv = tf.nn.compute_average_loss(out["g_adv"])
    set_generator_loss(model, out, adversarial_scale(model, tape, nll, g_adv))
    del tape
    return update_metrics(model, out)
