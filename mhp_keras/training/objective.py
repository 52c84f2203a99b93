"""ConAD's training objective, apart from the Keras model that owns the weights it trains.

The terms, as in Nguyen et al. (ICML 2019), Section 3:

* eq. (2), the multiple-hypotheses WTA reconstruction loss: the Gaussian NLL of x under the
  winning head (per image or per pixel), the losing heads sharing the weight `eps` (`vae_losses`);
* eq. (3), the VAE's KL(q(z|x) || N(0, I)), weighted by `kl_weight` (`vae_losses`);
* eq. (4), the discriminator's loss L_D: binary cross-entropy with real = x against three fake
  sources, decodings of z ~ N(0, I), decodings of z ~ q(z|x) and the best guess
  (`fakes.adversarial_losses`);
* eq. (5), the generator's objective WTA + KL + lambda * L_G, where L_G is the
  *non-saturating* form of -L_D (the fakes labelled real), which has the same fixed point but does
  not vanish when D wins early (`per_sample_losses`).

The adversarial weight lambda is set by `mhp_keras.training.balance` ("adaptive": so that D's
gradient on the decoder's last shared layer is `adv_weight` times the NLL's, whatever the image
size; "fixed": lambda = adv_weight).

What D sees (the fake sources, the heads, hypotheses discrimination) is
`mhp_keras.training.fakes`; the replica-consistent random draws are `mhp_keras.training.draws`.

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
    backend_variable,
    balance_positions,
    balance_variables,
    loss_scale,
    scale_from_gradients,
)
from mhp_keras.training.draws import normal, replica_random
from mhp_keras.training.fakes import adversarial_losses

LOSS_NAMES = ("loss", "recon", "kl", "g_adv", "d_loss", "d_acc_real", "d_acc_fake", "adv_scale")


def vae_losses(model, images, training):
    """The VAE terms of one batch, per sample: eq. (2)'s WTA NLL (or, for `mixture="mdn"`, the
    mixture NLL of `mhp_keras.training.mixture`) and eq. (3)'s KL.

    z is drawn from q(z|x) by the reparameterisation trick. Returns the per-sample `recon` (WTA
    NLL) and `kl` [B], `win` [B, K] (the share of each image, or of its pixels, that each head
    wins), and for the adversarial terms `mu`, the decoded `means` in the heads' native layout
    [B, h, w, C, K] and the `nll` [B, K, h, w]; and the decoder trunk's `features`, through which
    the NLL reaches the trunk and the encoder.
    """
    mu, log_var = model.encoder(images, training=training)
    log_var = losses.bounded_log_var(log_var)
    noise = replica_random(model, "posterior", tf.shape(mu), normal)
    z = mu + tf.exp(0.5 * log_var) * tf.cast(noise, mu.dtype)
    features = model.decoder_features(z, training=training)
    # In the heads' native layout [B, h, w, C, K].
    means, log_vars = model.decoder.get_layer("hypotheses").native(features)
    # Only the NLL map (1/C of the means' size) moves its heads axis to the front.
    nll = tf.transpose(losses.gaussian_nll(images, means, log_vars, head_axis=4), [0, 3, 1, 2])
    out = {"kl": losses.kl_to_standard_normal(mu, log_var), "mu": mu, "means": means, "nll": nll}
    out["features"] = features
    if model.mixture == "mdn":
        # The mixture NLL; the heads' shares are their responsibilities.
        log_pi = mixture.log_weights(model.mixer(z, training=training))
        best = mixture.responsible_head(nll, log_pi)
        recon = mixture.mixture_nll(nll, log_pi)
        return out | {"recon": recon, "win": mixture.responsibilities(nll, log_pi), "best": best}
    win = tf.one_hot(losses.winner_index(nll, model.wta), model.hypotheses)
    if model.wta == "pixel":
        win = tf.reduce_mean(win, axis=[1, 2])
    # The evolving WTA's k reaches training only; validation and scores keep the WTA's winner.
    top_k = model.wta_top_k if training else 1
    return out | {"recon": losses.wta_loss(nll, model.wta, model.eps, top_k), "win": win}


def per_sample_losses(model, images, training=False, adv_scale=None):
    """Every per-sample loss of one batch ([B] each, plus `win` [B, K]): what `train_step`
    averages over the global batch and `test_step` reports. `loss` is eq. (5)'s generator
    objective, WTA + kl_weight * KL + lambda * L_G, with lambda = `adv_scale` (default: the
    fixed adv_weight; `train_step` fills it in afterwards under the adaptive balance). Also the
    decoder trunk's `features` of the posterior samples (and, with D, `prior_features` of the
    prior samples), where G's update under the adaptive balance joins its two terms."""
    vae = vae_losses(model, images, training)
    out = {name: vae[name] for name in ("recon", "kl", "win", "features")}
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


def adaptive_generator_step(model, tape, vae, g_adv, variables, trunk=None):
    """G's update under the adaptive balance: grad VAE + lambda * grad L_G, with lambda from the
    two terms' gradients on the balance layer (the KL does not reach the decoder, so the VAE's is
    the NLL's); equal to one backward pass on VAE + lambda * L_G with lambda from separate
    passes. Returns lambda.

    `trunk` = (kl, features, prior_features): the KL term (weighted, batch-averaged) and the
    decoder trunk's features of the posterior and the prior samples, when the VAE's NLL reaches
    the generator upstream of the heads only through `features` (WTA models; an MDN's mixer
    reads z as well). Then the two terms are taken apart only from the loss down to the trunk's
    features (the heads and, for L_G, D's input gradient), lambda comes from the balance layer's
    weight gradients of each part, and one backward pass from the features, seeded with
    their lambda-weighted sum, carries both through the trunk and the encoder: the generator's
    bulk is traversed once instead of twice. Without it (None), two whole backward passes.
    """
    seed = loss_scale(model.g_optimizer)
    if trunk is None:
        vae_grads = tape.gradient(vae, variables, output_gradients=seed)
        adv_grads = tape.gradient(g_adv, variables, output_gradients=seed)
        at = balance_positions(model, variables)
        scale = scale_from_gradients(model, [vae_grads[i] for i in at], [adv_grads[i] for i in at])
        grads = [_weighted_sum(a, b, scale) for a, b in zip(vae_grads, adv_grads, strict=True)]
        step(model, model.g_optimizer, grads, variables)
        return scale
    kl, *features = trunk
    heads = [backend_variable(v) for v in model.decoder.get_layer("hypotheses").trainable_weights]
    layer = balance_variables(model)
    # Each term down to the trunk's features, with its gradients on the heads and (from those
    # features) on the balance layer: the only part of the generator taken twice.
    vae_feature, *vae_heads = tape.gradient(vae, features[:1] + heads, output_gradients=seed)
    vae_layer = tape.gradient(features[0], layer, output_gradients=vae_feature)
    adv = tape.gradient(g_adv, features + heads, output_gradients=seed)
    adv_features, adv_heads = adv[: len(features)], adv[len(features) :]
    adv_layer = tape.gradient(features, layer, output_gradients=adv_features)
    scale = scale_from_gradients(model, vae_layer, adv_layer)
    near = zip(vae_heads + vae_layer, adv_heads + adv_layer, strict=True)
    grads = {id(v): _weighted_sum(a, b, scale) for v, (a, b) in zip(heads + layer, near)}
    # One pass through the rest of the generator (the KL's part included), seeded at the
    # features with the lambda-weighted sum of the two terms' gradients.
    rest = [v for v in variables if id(backend_variable(v)) not in grads]
    seeds = [_weighted_sum(vae_feature, adv_features[0], scale)]
    seeds += [_weighted_sum(None, g, scale) for g in adv_features[1:]]
    rest_grads = tape.gradient(features + [kl], rest, output_gradients=seeds + [seed])
    grads.update((id(backend_variable(v)), g) for v, g in zip(rest, rest_grads, strict=True))
    step(model, model.g_optimizer, [grads[id(backend_variable(v))] for v in variables], variables)
    return scale


def _weighted_sum(vae_grad, adv_grad, scale):
    """vae_grad + scale * adv_grad; either is None for a variable that only the other term
    reaches."""
    if adv_grad is None:
        return vae_grad
    weighted = adv_grad * tf.cast(scale, adv_grad.dtype)
    return weighted if vae_grad is None else vae_grad + weighted


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
        kl = model.kl_weight * tf.nn.compute_average_loss(out["kl"])
        vae = nll + kl
        g_adv = tf.nn.compute_average_loss(out["g_adv"])
        d_loss = tf.nn.compute_average_loss(out["d_loss"])
    # Train G on eq. (5): WTA + KL + lambda * L_G.
    generator = model.generator_variables
    if model.adversarial:
        if adaptive:
            # An MDN's mixer also reads z, so its NLL reaches the encoder apart from the trunk.
            trunk = None if model.mixture == "mdn" else (kl, out["features"], out["prior_features"])
            scale = adaptive_generator_step(model, g_tape, vae, g_adv, generator, trunk)
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
