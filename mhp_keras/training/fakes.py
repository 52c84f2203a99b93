"""What the discriminator sees and the adversarial terms of eq. (4) and (5) (Nguyen et al. 2019).

D sees real = x against three fake sources: decodings of z ~ N(0, I), decodings of z ~ q(z|x)
and the best guess; each image gives all three (`adv_sources="every"`) or one, a third of the
batch each ("split", `source_rows`). With `adv_hypotheses="sample"` each image's fake comes from
one uniformly drawn head, an unbiased estimate of the average over heads whose discriminator cost
does not grow with H (prior samples are decoded through their drawn head alone); "all" feeds D
every head; "group" is the paper's hypotheses discrimination (Section 4.2): D sees every input's
K hypotheses side by side as one group, whose minibatch feature is computed within the group,
against groups of K real images and groups of K best guesses (`rolled_groups`), in one D call;
"views" is the same, except that a real group (and a best-guess group) is K views of *one* image,
shifted by a few pixels (`shifted_views`): what D learns to call real is then the variation
plausible for one input, not the variety of K different images, which any pattern would match.
`mhp_keras.training.objective` combines these terms with the VAE's.
"""

from __future__ import annotations

import tensorflow as tf

from mhp_keras.config.model_settings import GROUPED_HYPOTHESES
from mhp_keras.training import losses
from mhp_keras.training.draws import normal, replica_random


def bce(logits, label):
    """Per-sample sigmoid cross-entropy against a constant label, in float32: [B]."""
    logits = tf.cast(tf.reshape(logits, [-1]), tf.float32)
    return tf.nn.sigmoid_cross_entropy_with_logits(tf.fill(tf.shape(logits), label), logits)


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
    return prior_fakes_from(model, model.decoder_features(z, training=training), heads)


def prior_fakes_from(model, features, heads):
    """`prior_fakes` from the decoder trunk's features of the prior z."""
    layer = model.decoder.get_layer("hypotheses")
    if samples_one_head(model):
        return layer.selected_means(features, heads)
    return pick_fakes(model, layer.means_only(features), heads)


def rolled_groups(images, k):
    """Groups of k images for D, image-major [B * k, ...]: group b holds images b, b+1, ...,
    b+k-1 (mod B) of this batch, so every image leads one group of k distinct images (B >= k)."""
    batch = tf.shape(images)[0]
    index = (tf.range(batch)[:, None] + tf.range(k)[None, :]) % batch
    return tf.gather(images, tf.reshape(index, [-1]))


def view_margin(image_size: int) -> int:
    """The largest shift of a view, in pixels: a sixteenth of the side (at least 1), small
    enough that a shifted view is the same object, as large as a head's plausible misplacement."""
    return max(1, image_size // 16)


def view_offsets(model, rows, k):
    """Where each of the k - 1 shifted views of every row starts in its reflect-padded image,
    [rows, k - 1, 2] (row, column) in [0, 2m]; never (m, m), the unshifted image itself, so that a
    real group holds no two identical images. Drawn from the heads' stream, which the grouped
    modes do not otherwise use (a new purpose would change every other draw's seed)."""
    side = 2 * view_margin(model.image_size) + 1
    centre = side * side // 2

    def sampler(shape, seed):
        cell = tf.random.stateless_uniform(
            shape, seed, minval=0, maxval=side * side - 1, dtype=tf.int32
        )
        return cell + tf.cast(cell >= centre, tf.int32)

    cells = replica_random(model, "heads", tf.stack([rows, k - 1]), sampler)
    return tf.stack([cells // side, cells % side], -1)


def shifted_views(images, offsets, margin):
    """Groups of views for D, image-major [B * k, h, w, C]: group b is image b, then its k - 1
    views, each the h x w window at `offsets[b, j]` of the image reflect-padded by `margin`."""
    h, w = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [margin, margin], [margin, margin], [0, 0]], "REFLECT")
    views = [images]
    for j in range(offsets.shape[1]):
        rows = offsets[:, j, 0:1] + tf.range(h)[None]
        cols = offsets[:, j, 1:2] + tf.range(w)[None]
        window = tf.gather(padded, rows, axis=1, batch_dims=1)
        views.append(tf.gather(window, cols, axis=2, batch_dims=1))
    return tf.reshape(tf.stack(views, 1), tf.concat([[-1], tf.shape(images)[1:]], 0))


def real_groups(model, images):
    """The groups of K that D sees for real images (and for best guesses): K different images of
    the batch ("group") or K shifted views of each image ("views")."""
    k = model.hypotheses
    if model.adv_hypotheses == "group":
        return rolled_groups(images, k)
    offsets = view_offsets(model, tf.shape(images)[0], k)
    return shifted_views(images, offsets, view_margin(model.image_size))


def _discriminate(model, real, fakes, training):
    """D's logits of the real batch and of each fake source. Under hypotheses discrimination
    every source comes in groups of K and one D call takes them all (groups stay aligned: each
    part is a multiple of K); otherwise each source is its own call, so that a batch-wide
    minibatch feature describes one source."""
    if model.adv_hypotheses not in GROUPED_HYPOTHESES:
        return model.discriminator(real, training=training), [
            model.discriminator(f, training=training) for f in fakes
        ]
    parts = [real_groups(model, real), *fakes[:2], real_groups(model, fakes[2])]
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
    group = k if model.adv_hypotheses in GROUPED_HYPOTHESES else 1
    return [k, k, group, group]


def adversarial_losses(model, images, vae, training):
    """The adversarial terms of one batch, per sample, from `vae_losses`' decodings.

    D sees real = `images` against three fake sources: decodings of z ~ N(0, I), decodings of
    z ~ q(z|x) (one random head per image, or every head) and the best guess, from a third of the
    rows each or from every row (`source_rows`). Returns `d_loss` (eq. (4), D's binary
    cross-entropy), `g_adv` (the generator's non-saturating L_G of eq. (5): the fakes labelled
    real) and D's accuracies `d_acc_real`, `d_acc_fake`, each [B]; and `prior_features`, the
    decoder trunk's features of the prior samples, through which L_G reaches the trunk
    (`objective.adaptive_generator_step` continues G's backward pass from them).
    """
    batch = tf.shape(images)[0]
    bounds = source_rows(model, batch)

    def rows(x, source):
        return x if bounds is None or x is None else x[bounds[source][0] : bounds[source][1]]

    prior_z = replica_random(model, "prior", tf.stack([batch, model.z_dim]), normal)
    # Only drawn when D sees one head per image; otherwise every head is a fake.
    heads = fake_heads(model, batch) if samples_one_head(model) else None
    prior_z = tf.cast(rows(prior_z, 0), vae["mu"].dtype)
    prior_features = model.decoder_features(prior_z, training=training)
    fakes = [
        prior_fakes_from(model, prior_features, rows(heads, 0)),
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
        "prior_features": prior_features,
    }
