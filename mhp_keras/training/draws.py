"""Random draws for the training step that are the same on any number of replicas.

Every replica draws the whole global batch from one stateless seed (the model's seed, the step
and the draw's purpose) and keeps its own rows, so N replicas see exactly the noise one device
would, and a run is reproducible from `model.seed` alone, whatever the op order.
"""

from __future__ import annotations

import tensorflow as tf

RANDOM_PURPOSES = ("posterior", "prior", "heads")


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


def normal(shape, seed):
    return tf.random.stateless_normal(shape, seed)
