"""Where a training step's time goes: the per-op times of TF's profiler, summed into parts.

    python -m benchmarks.profile_step [--sizes=32,64,128] [--quick] [--output_dir=runs/profile]

Why it exists: the speed benchmark (`benchmarks.speed`) says how fast a step is and what share of
the matmul peak it reaches (issue 19), not where the rest goes. This traces a few training steps
of ConAD (H=8, every other setting the config default, float32 unless `--precision` says
otherwise) with `tf.profiler.experimental` at each image size, reads the per-op events from the
trace's XSpace, and sums each op's time into a part of the model: encoder, decoder trunk, heads,
NLL / WTA and the other losses, the discriminator, each forward and backward, the optimizers
(with the gradient clipping), layout transposes and everything else. It writes `profile.json`
(every part, and the slowest ops by name) and `profile.md` into --output_dir and prints the table.

Op times overlap: TF runs independent ops on its inter-op threads at once, and on a shared
machine other load stretches them too, so the parts are reported as shares of the summed op time
beside the step's wall time (the median of timed steps outside the trace), not as a partition of
it. `--smoke` is for the test only: a tiny model, one traced step; its numbers mean nothing.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import re
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from mhp_keras.io_utils import write_json_atomic, write_text_atomic  # noqa: E402

PARTS = (
    "encoder forward",
    "encoder backward",
    "decoder trunk forward",
    "decoder trunk backward",
    "heads forward",
    "heads backward",
    "NLL, WTA and losses forward",
    "NLL, WTA and losses backward",
    "discriminator forward",
    "discriminator backward",
    "optimizers and clipping",
    "layout transposes",
    "other",
)
# Ops outside any layer's name scope that belong to the heads: the prior samples' selected-head
# decoding (`HypothesisHeads.selected_means`) runs in the objective's scope, not the layer's.
HEAD_OP_TYPES = ("Conv2DBackpropInput", "BatchMatMul", "Conv2D")
LOSS_OP_TYPES = ("Sub", "Square", "Exp", "Mul", "RealDiv", "Sum", "ArgMin", "OneHot", "AddV2")
LOSS_OP_TYPES += ("Neg", "Log", "Sigmoid", "Mean", "BroadcastTo", "Select", "Greater", "Less")
LOSS_OP_TYPES += ("UnaryOpsComposition", "Softplus", "AddN", "Cast", "Maximum", "Minimum")


def op_type(name: str) -> str:
    """The op's type from a trace event name "scope/op:Type", without oneDNN's prefixes."""
    kind = name.rsplit(":", 1)[-1]
    kind = re.sub(r"^_Mkl(Native)?(Fused)?", "", kind)
    return kind or name


def classify(name: str) -> str:
    """The part of the model an op belongs to, from its scoped name and type (see PARTS)."""
    scope = name.rsplit(":", 1)[0]
    kind = op_type(name)
    backward = "gradient_tape/" in scope
    direction = "backward" if backward else "forward"
    if kind.startswith("Transpose") or kind.startswith("ConjugateTranspose"):
        return "layout transposes"
    if re.search(r"(^|/)(adam|sgd|rmsprop|clip_by_global_norm|global_norm)(_\d+)?/", scope):
        return "optimizers and clipping"
    if kind.startswith(("ResourceApply", "AssignAddVariableOp", "AssignSubVariableOp")):
        return "optimizers and clipping"
    for prefix, part in (
        ("encoder", "encoder"),
        ("discriminator", "discriminator"),
        ("heads", "heads"),
        ("head_", "heads"),
        ("hypotheses", "heads"),
        ("decoder_trunk", "decoder trunk"),
        ("decoder", "decoder trunk"),
    ):
        if re.search(rf"(^|/){prefix}(_\d+)?/", scope):
            return f"{part} {direction}"
    if kind.startswith(HEAD_OP_TYPES):
        return f"heads {direction}"
    if kind.startswith(LOSS_OP_TYPES):
        return f"NLL, WTA and losses {direction}"
    return "other"


def op_events(logdir: str) -> dict:
    """Total picoseconds and count of every op name in the trace under `logdir`: the events on
    TF's executor threads that carry an op type ("name:Type")."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals = collections.defaultdict(lambda: [0, 0])
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            names = plane.event_metadata
            for line in plane.lines:
                if not line.name.startswith(("tf_Compute", "tf_inter_op", "tf_XLA")):
                    continue
                for event in line.events:
                    name = names[event.metadata_id].name
                    if ":" in name and not name.startswith(("ExecutorState", "Iterator")):
                        totals[name][0] += event.duration_ps
                        totals[name][1] += 1
    return {name: tuple(v) for name, v in totals.items()}


def summarise(events: dict, steps: int, top: int = 15) -> dict:
    """Per-step milliseconds and shares of every part, and the `top` slowest ops."""
    parts = dict.fromkeys(PARTS, 0.0)
    for name, (ps, _) in events.items():
        parts[classify(name)] += ps / 1e9 / steps
    total = sum(parts.values()) or 1.0
    slowest = sorted(events.items(), key=lambda item: -item[1][0])[:top]
    return {
        "op_ms_per_step": total,
        "parts": {p: {"ms": ms, "share": ms / total} for p, ms in parts.items()},
        "slowest_ops": [
            {"op": n, "part": classify(n), "ms": ps / 1e9 / steps, "calls": c / steps}
            for n, (ps, c) in slowest
        ],
    }


def profile_size(size: int, hypotheses: int, batch: int, precision: str, steps: dict) -> dict:
    """Builds the model at one size, times `steps["timed"]` steps, then traces
    `steps["traced"]` steps and summarises them."""
    import tensorflow as tf

    from benchmarks import steps as harness

    config = harness.model_config(hypotheses, size, 3, mixed=precision)
    config.data.batch_size = batch
    model = harness.build_model(config)
    images = harness.random_images(2 * batch, size, 3)
    runner = harness.TrainRunner(model, harness.memory_dataset(images, batch))
    runner.warm_up(steps["warmup"])
    seconds = [harness.time_steps(runner, 1) for _ in range(steps["timed"])]
    with tempfile.TemporaryDirectory(prefix="mhp_profile_") as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps["traced"]):
                runner.step()
        finally:
            tf.profiler.experimental.stop()
        summary = summarise(op_events(logdir), steps["traced"])
    return {
        "image_size": size,
        "hypotheses": hypotheses,
        "batch": batch,
        "precision": precision,
        "step_ms": 1000 * float(np.median(seconds)),
        "best_step_ms": 1000 * min(seconds),
        "traced_steps": steps["traced"],
        **summary,
    }


MODES = {  # warm-up, timed and traced steps
    "full": {"warmup": 5, "timed": 20, "traced": 5},
    "quick": {"warmup": 3, "timed": 8, "traced": 2},
    "smoke": {"warmup": 1, "timed": 1, "traced": 1},
}


def run_profile(sizes, mode: str, output_dir: str, batch=None, precision="none") -> dict:
    """Every size in turn; writes and returns the results."""
    from benchmarks.harness import machine_info
    from mhp_keras.config.defaults import base_config

    defaults = base_config()
    batch = batch or int(defaults.data.batch_size)
    hypotheses = 2 if mode == "smoke" else 8
    start = time.perf_counter()
    results = {"mode": mode, "machine": machine_info(), "by_size": {}}
    for size in sizes:
        results["by_size"][str(size)] = profile_size(
            size, hypotheses, batch, precision, MODES[mode]
        )
    results["elapsed_s"] = time.perf_counter() - start
    results["machine"]["load_average_end"] = os.getloadavg()[0]
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, "profile.json"), results)
    write_text_atomic(os.path.join(output_dir, "profile.md"), to_markdown(results))
    return results


def to_markdown(results: dict) -> str:
    """One row a part, one column pair (ms, share of op time) a size."""
    sizes = list(results["by_size"].values())
    head = " | ".join(f"{r['image_size']} px ms | share" for r in sizes)
    lines = [
        f"Training-step profile ({results['mode']} mode) on {results['machine']['cpu_model']}, "
        f"{results['elapsed_s']:.0f} s; H={sizes[0]['hypotheses']}, batch {sizes[0]['batch']}, "
        f"{sizes[0]['precision']} precision. Milliseconds of op time per step.",
        "",
        f"| part | {head} |",
        "|---|" + "---|---|" * len(sizes),
    ]
    for part in PARTS:
        cells = " | ".join(
            f"{r['parts'][part]['ms']:.1f} | {100 * r['parts'][part]['share']:.0f} %" for r in sizes
        )
        lines.append(f"| {part} | {cells} |")
    lines.append(
        "| **summed op time** | " + " | ".join(f"{r['op_ms_per_step']:.0f} | " for r in sizes) + "|"
    )
    lines.append(
        "| step wall (median) | " + " | ".join(f"{r['step_ms']:.0f} | " for r in sizes) + "|"
    )
    return "\n".join(lines) + "\n"


def parse_sizes(text: str) -> list[int]:
    """`--sizes` as a list of image sides, each a power of two in 16..256."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 16 or s > 256 or s & (s - 1) for s in sizes):
        raise app.UsageError(
            f"--sizes={text!r}: expected comma-separated powers of two in 16..256, e.g. 32,64,128."
        )
    return sizes


def define_flags() -> None:
    """Defined only when run as a script, so that importing this module in pytest next to other
    absl flags does not clash."""
    flags.DEFINE_string("sizes", "32,64,128", "Image sides to profile, comma-separated.")
    flags.DEFINE_bool("quick", False, "Fewer timed and traced steps.")
    flags.DEFINE_bool("smoke", False, "Test only: a tiny model, one traced step.")
    flags.DEFINE_integer("batch", 0, "Batch size (0: the config default, data.batch_size).")
    flags.DEFINE_enum(
        "precision", "none", ["none", "bfloat16"], "train.mixed_precision of the profiled model."
    )
    flags.DEFINE_string(
        "output_dir", os.path.join("runs", "profile"), "Where profile.json and .md are written."
    )


def main(argv):
    del argv
    values = flags.FLAGS
    mode = "smoke" if values.smoke else "quick" if values.quick else "full"
    sizes = parse_sizes(values.sizes)
    results = run_profile(sizes, mode, values.output_dir, values.batch or None, values.precision)
    print(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(to_markdown(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
