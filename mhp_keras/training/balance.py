"""The adversarial weight lambda of eq. (5), and the float16 loss scale the update is taken with.

The paper writes eq. (5) unweighted, but its WTA NLL is summed over every pixel while L_G is one
number per image, so with any fixed weight the larger the image, the less D reaches the generator
(at 32 to 128 px D's gradient on the decoder was 10^-4 of the NLL's). With
`adv_balance="adaptive"` (after Esser et al. 2021, "Taming transformers", eq. 7) lambda is set every
step so that, on the generator's last shared layer (the decoder trunk's last layer, which every
head reads), the adversarial gradient's norm is `adv_weight` times the NLL gradient's; "fixed" uses
lambda = adv_weight. `mhp_keras.training.objective` calls `adversarial_scale` in its train and
test steps.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mhp_keras.training.diagnostics import TINY, global_norm, last_shared_layer

# The adaptive lambda's ceiling, as in Esser et al.: a D whose gradient vanishes (saturated, or
# untrained at the first step) must not turn its noise into an arbitrarily large update.
MAX_ADV_SCALE = 1e4


def backend_variable(variable):
    """The backend's tf.Variable behind a Keras variable: what a tape watches explicitly, and
    what tells two wrappers of one variable apart from two variables."""
    return getattr(variable, "value", variable)


def balance_variables(model):
    """The variables lambda balances on: the decoder trunk's last layer (every head reads it),
    as the backend's tf.Variables."""
    return [backend_variable(v) for v in last_shared_layer(model.decoder).trainable_weights]


def sum_over_replicas(grads):
    """The whole batch's gradient from this replica's part (the parts are summed; see
    `clip_global`); unchanged on one device."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return grads
    return context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))


def adversarial_scale(model, tape, nll_loss, adv_loss):
    """lambda of eq. (5): `adv_weight` ("fixed"), or ("adaptive") adv_weight * |grad NLL| /
    |grad L_G| on `balance_variables`, both the global batch's, capped at MAX_ADV_SCALE and
    without a gradient of its own. `tape` (persistent) watched those variables while `nll_loss`
    and `adv_loss` (batch averages) were computed."""
    if not model.adversarial or model.adv_balance == "fixed":
        return tf.constant(model.adv_weight, tf.float32)
    variables = balance_variables(model)
    # Under float16 both gradients are taken of the loss-scaled terms, as the update's are, so
    # that neither underflows; the common factor cancels in the ratio.
    seed = loss_scale(getattr(model, "g_optimizer", None))
    nll, adv = (
        tape.gradient(loss, variables, output_gradients=seed) for loss in (nll_loss, adv_loss)
    )
    return scale_from_gradients(model, nll, adv)


def scale_from_gradients(model, nll_grads, adv_grads):
    """The adaptive lambda from this replica's gradients of the NLL and of L_G on
    `balance_variables` (in its order): summed over replicas, then adv_weight * |NLL's| /
    |L_G's|, capped at MAX_ADV_SCALE, finite, without a gradient of its own."""
    norms = [global_norm(sum_over_replicas(g)) for g in (nll_grads, adv_grads)]
    scale = tf.minimum(model.adv_weight * norms[0] / (norms[1] + TINY), MAX_ADV_SCALE)
    # A step whose scaled gradients overflowed is skipped by the loss-scale optimizer; its
    # lambda falls back to adv_weight rather than logging a NaN.
    scale = tf.where(tf.math.is_finite(scale), scale, model.adv_weight)
    return tf.stop_gradient(scale)


def balance_positions(model, variables) -> list[int]:
    """Where `balance_variables` sit in `variables` (the generator's), in their order."""
    index = {id(backend_variable(v)): i for i, v in enumerate(variables)}
    return [index[id(v)] for v in balance_variables(model)]


def loss_scale(optimizer):
    """The float16 loss scale of a `keras.optimizers.LossScaleOptimizer` (1 otherwise): its
    `apply_gradients` divides the gradients by it, so they must be taken of the scaled loss."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return tf.cast(optimizer.scale_loss(1.0), tf.float32)
    return tf.constant(1.0, tf.float32)
