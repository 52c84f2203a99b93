"""How much arithmetic the model does, and how fast this machine can do arithmetic at best.

FLOPs come from TF's flop registry through the public `tf.compat.v1.profiler` (its
`float_operation` view: convolutions and matmuls count 2 FLOPs per multiply-add), applied only to
the ops a step really executes. A concrete function's graph also holds ops that never run (the
training step's second gradient tape leaves unused gradients that TF prunes), so the graph is first
cut down to the ancestors of its outputs and of its stateful updates. The matmul peak is the best
float32 `tf.matmul` rate measured; with the training step's FLOPs it says how much of the
machine's practical peak training reaches.
"""

from __future__ import annotations

import time

import tensorflow as tf

from benchmarks.modes import MAIN_H, Mode


def executed_graph(function) -> tf.Graph:
    """The ops of a concrete function that run (ancestors of its outputs and of its control
    outputs, the stateful updates), as a graph of their own with the traced shapes."""
    traced = function.graph
    ends = [t.op.name for t in function.outputs] + [op.name for op in traced.control_outputs]
    pruned = tf.compat.v1.graph_util.extract_sub_graph(traced.as_graph_def(), ends)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(pruned, name="")
    # Importing re-infers shapes, but a captured variable's handle loses its shape in a GraphDef,
    # so every kernel read would be unknown and its convolution go uncounted: copy them back.
    for op in graph.get_operations():
        outputs = traced.get_operation_by_name(op.name).outputs
        for imported, original in zip(op.outputs, outputs, strict=True):
            imported.set_shape(original.shape)
    return graph


def graph_flops(function) -> int:
    """FLOPs of one call, from TF's flop registry (convolutions and matmuls count 2 per MAC)."""
    options = (
        tf.compat.v1.profiler.ProfileOptionBuilder(
            tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        )
        .with_empty_output()
        .build()
    )
    profile = tf.compat.v1.profiler.profile(executed_graph(function), options=options)
    return int(profile.total_float_ops)


def flops_per_image(model, mode: Mode) -> dict:
    """Forward FLOPs (encoder + decoder, and each network alone) and training-step FLOPs."""
    s, c, b = model.image_size, model.channels, mode.batch
    image1 = tf.TensorSpec([1, s, s, c], tf.float32)
    z1 = tf.TensorSpec([1, model.z_dim], tf.float32)
    count = lambda fn, spec: graph_flops(
        tf.function(fn, autograph=False).get_concrete_function(spec)  # as Keras traces steps
    )
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the registry's shape helper and extract_sub_graph log deprecations
    try:
        return {
            "forward": count(lambda x: model(x), image1),
            "encoder_forward": count(lambda x: model.encoder(x), image1),
            "decoder_forward": count(lambda z: model.decoder(z), z1),
            "discriminator_forward": count(lambda x: model.discriminator(x), image1),
            "train_step": count(model.train_step, tf.TensorSpec([b, s, s, c], tf.float32)) / b,
        }
    finally:
        logger.setLevel(level)


def flops_summary(runners, mode: Mode, results) -> dict:
    """FLOPs per image at H=1 and H=8, and the achieved training rate against the matmul peak."""
    flops = {f"H={h}": flops_per_image(runners[f"H={h}"].model, mode) for h in (1, MAIN_H)}
    wta = {
        h: flops_per_image(runners[f"mhp_wta_H={h}"].model, mode)
        for h in (1, MAIN_H)
        if f"mhp_wta_H={h}" in runners
    }
    rate = results["train"]["by_hypotheses"][str(MAIN_H)]["images_per_s"]
    achieved = flops[f"H={MAIN_H}"]["train_step"] * rate
    return {
        "method": "TF flop registry (tf.compat.v1.profiler float_operation) over the executed ops "
        "of concrete-function graphs; per image; 2 FLOPs per multiply-add",
        "per_image": flops,
        "train_h8_over_h1": flops[f"H={MAIN_H}"]["train_step"] / flops["H=1"]["train_step"],
        # Without the discriminator (MHP-WTA); None where those runners could not be built.
        "mhp_wta_train_h8_over_h1": (
            wta[MAIN_H]["train_step"] / wta[1]["train_step"] if len(wta) == 2 else None
        ),
        "achieved_train_flops_per_s": achieved,
        "fraction_of_matmul_peak": achieved / results["matmul_peak"]["flops_per_s"],
    }


def matmul_peak(sizes, repeats) -> dict:
    """The best float32 matmul rate seen, in FLOP/s, as the machine's practical peak."""
    best = 0.0
    matmul = tf.function(tf.matmul)
    for n in sizes:
        a = tf.random.uniform([n, n], seed=1)
        matmul(a, a).numpy()
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a, a).numpy()
            best = max(best, 2.0 * n**3 / (time.perf_counter() - start))
    return {"flops_per_s": best, "sizes": list(sizes), "repeats": repeats}
