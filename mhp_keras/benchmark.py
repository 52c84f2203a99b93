"""Measures mhp_keras's speed, memory and FLOP use on the current machine (issue 5).

    python -m mhp_keras.benchmark [--quick] [--output_dir=runs/benchmark]

Why it exists: ConAD's promise is that hypotheses are nearly free (one shared trunk, cheap heads),
that the tf.data pipeline keeps training fed, and that the options we default to (fused heads, no
mixed precision, no XLA) are the fast ones. Each of those is a claim about this code on real
hardware, so this module measures them instead of asserting them, and writes `benchmark.json` and
`benchmark.md` into --output_dir.

Method. Training steps are timed by calling the model's own `train_function` (what `fit` runs, with
the same `tf.function` and `jit_compile`) on an iterator of in-memory batches. All 32x32 variants
(H = 1..16, separate heads, bfloat16 at H = 8 and 1, XLA) are built first, then timed round-robin,
`repeats` rounds of `steps` steps each after `warmup` steps, so slow drift in machine load hits them
all alike; a time is the median over rounds, and ratios are medians of per-round ratios. FLOPs come
from TF's flop registry (the one `tf.compat.v1.profiler`'s float_operation uses) summed over the ops
of a concrete-function graph that the step really executes (the static graph also holds the second
gradient tape's unused gradients, which TF prunes). The matmul peak is the best float32 `tf.matmul`
rate measured at the start and the end of the same run. The pipeline is compared with in-memory data
over whole epochs after the cache-filling first one, each read from one repeated iterator as
training reads it; the time to delete a one-pass iterator (which fit would pay per epoch without
that) is reported apart. Peak memory is VmHWM
of a separate process that runs `model.fit`. `--quick` trades precision for a run of under 3
minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from mhp_keras import losses  # noqa: E402
from mhp_keras.config_defaults import base_config  # noqa: E402
from mhp_keras.experiment import PRECISION_POLICIES, make_optimizers  # noqa: E402
from mhp_keras.io_utils import write_json_atomic, write_text_atomic  # noqa: E402
from mhp_keras.models import build_conad  # noqa: E402

TARGET_H8_OVER_H1 = 1.25  # step time ratio: eight hypotheses cost at most 25% more than one
TARGET_PIPELINE = 0.95  # pipeline-fed steps run at >= 95% of the speed of memory-fed steps
MAIN_H = 8  # the hypothesis count the comparisons (fused, bfloat16, XLA, pipeline) use


@dataclasses.dataclass(frozen=True)
class Mode:
    """Sizes and repetition counts of one benchmark run."""

    name: str
    image_size: int = 32
    channels: int = 3
    batch: int = 64
    hypotheses: tuple = (1, 2, 4, 8, 16)
    big_size: int = 128
    big_batch: int = 64
    warmup: int = 3
    repeats: int = 30  # rounds of the 32x32 round-robin
    steps: int = 2  # steps per runner per round: short, so load spikes hit all runners alike
    big_repeats: int = 3
    big_steps: int = 3
    score_images: int = 2048
    pipeline_images: int = 2048
    pipeline_epochs: int = 3  # timed epochs after the cache-filling first one
    memory_steps: int = 20
    matmul_sizes: tuple = (1024, 2048)
    matmul_repeats: int = 5
    concurrent_memory_probe: bool = False


MODES = {
    "full": Mode("full"),
    "quick": Mode(
        "quick",
        big_batch=16,
        warmup=2,
        repeats=12,
        steps=1,
        big_repeats=2,
        big_steps=2,
        score_images=512,
        pipeline_images=512,
        pipeline_epochs=6,
        memory_steps=5,
    ),
    # Test-only: every code path once, at sizes where the numbers mean nothing.
    "smoke": Mode(
        "smoke",
        image_size=16,
        batch=8,
        big_size=32,
        big_batch=4,
        warmup=1,
        repeats=1,
        steps=1,
        big_repeats=1,
        big_steps=1,
        score_images=16,
        pipeline_images=16,
        pipeline_epochs=1,
        memory_steps=2,
        matmul_sizes=(128,),
        matmul_repeats=1,
        hypotheses=(1, MAIN_H),
        concurrent_memory_probe=True,
    ),
}

# -- machine ------------------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict:
    flags_ = cpu_flags()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_bf16": sorted(f for f in flags_ if "bf16" in f),
        "cpu_avx512f": "avx512f" in flags_,
        "load_average_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
    }


def read_status_mb(field: str) -> float | None:
    """A memory field (VmRSS, VmHWM) of /proc/self/status in MiB; None off Linux."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# -- models and timing --------------------------------------------------------------------------


def model_config(hypotheses, image_size, channels, fused=True, mixed="none", jit=False):
    """The default config (`config_defaults.base_config`) with this run's sizes."""
    c = base_config()
    c.data.image_size = image_size
    c.data.channels = channels
    c.model.hypotheses = hypotheses
    c.model.fused_heads = fused
    c.train.mixed_precision = mixed
    c.train.jit_compile = jit
    return c


def build_model(config):
    """Builds and compiles a ConAD as `experiment.build_and_compile` does, on one device.

    The dtype policy is global in Keras, so it is set for the build and restored after: layers
    keep the policy they were built with. Seeds are set once per run, not here: seeding
    clears TF's kernel cache, and every model built so far would re-instantiate its step.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISION_POLICIES[config.train.mixed_precision])
    try:
        model = build_conad(config)
        g_opt, d_opt = make_optimizers(config)
        model.compile(g_optimizer=g_opt, d_optimizer=d_opt, jit_compile=config.train.jit_compile)
    finally:
        keras.config.set_dtype_policy(previous)
    return model


def random_images(n, size, channels, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, size, size, channels), dtype=np.float32)


def memory_dataset(images: np.ndarray, batch: int) -> tf.data.Dataset:
    """Batches of tensors already in memory, shaped like the pipeline's ([None, S, S, C]).

    Nothing to prefetch or tune: with tf.data autotuning on, deleting an iterator can block for
    up to a second while the autotuner thread wakes up, which would only add noise here.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices(images).batch(batch).with_options(options)


class TrainRunner:
    """Runs one `fit`-compiled training step at a time and waits for it to finish."""

    def __init__(self, model, dataset: tf.data.Dataset):
        self.model = model
        model.make_train_function()
        self.function = model.train_function
        self.iterator = iter(dataset.repeat())
        self.logs = None
        self.first_step_s = None

    def step(self, iterator=None):
        self.logs = self.function(iterator if iterator is not None else self.iterator)
        return float(self.logs["loss"])  # blocks until the step is done

    def warm_up(self, steps: int) -> None:
        start = time.perf_counter()
        self.step()
        self.first_step_s = time.perf_counter() - start
        for _ in range(steps - 1):
            self.step()


def time_steps(runner: TrainRunner, steps: int) -> float:
    """Seconds per step over `steps` consecutive steps."""
    start = time.perf_counter()
    for _ in range(steps):
        runner.step()
    return (time.perf_counter() - start) / steps


def round_robin(runners: dict, repeats: int, steps: int) -> dict:
    """Per-round seconds per step of every runner, the runners interleaved round by round."""
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            times[name].append(time_steps(runner, steps))
    return times


def median(values) -> float:
    return float(np.median(values))


def paired_ratio(numerator, denominator) -> float:
    """Median of per-round ratios: robust to load that drifts between rounds."""
    return median([a / b for a, b in zip(numerator, denominator, strict=True)])


def train_summary(seconds, batch) -> dict:
    """Median step time and throughput; the best round too, the least disturbed by other load."""
    step = median(seconds)
    return {
        "step_ms": 1000 * step,
        "best_step_ms": 1000 * min(seconds),
        "images_per_s": batch / step,
        "rounds_ms": [1000 * s for s in seconds],
    }


# -- FLOPs --------------------------------------------------------------------------------------


def executed_ops(function) -> list:
    """The ops of a concrete function that run: ancestors of its outputs and stateful updates."""
    graph = function.graph
    stack = [t.op for t in function.outputs] + list(graph.control_outputs)
    seen = {}
    while stack:
        op = stack.pop()
        if op.name in seen:
            continue
        seen[op.name] = op
        stack.extend(t.op for t in op.inputs)
        stack.extend(op.control_inputs)
    return list(seen.values())


def graph_flops(function) -> int:
    """FLOPs of one call, from TF's flop registry (convolutions and matmuls count 2 per MAC)."""
    from tensorflow.python.framework import ops as tf_ops

    total = 0
    for op in executed_ops(function):
        try:
            stat = tf_ops.get_stats_for_node_def(function.graph, op.node_def, "flops")
        except (ValueError, TypeError):  # an op without a registered count or unknown shapes
            continue
        total += stat.value or 0
    return int(total)


def flops_per_image(model, mode: Mode) -> dict:
    """Forward FLOPs (encoder + decoder, and each network alone) and training-step FLOPs."""
    s, c, b = model.image_size, model.channels, mode.batch
    image1 = tf.TensorSpec([1, s, s, c], tf.float32)
    z1 = tf.TensorSpec([1, model.latent_dim], tf.float32)
    count = lambda fn, spec: graph_flops(
        tf.function(fn, autograph=False).get_concrete_function(spec)  # as Keras traces steps
    )
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the registry's shape helper logs a deprecation warning
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


# -- inference ----------------------------------------------------------------------------------


def images_per_s(run, n_images, repeats) -> float:
    """Images per second of `run()` (which processes n_images), median over repeats."""
    run()  # warm-up: traces and allocates
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return n_images / median(seconds)


def measure_inference(model, mode: Mode, workdir: str) -> dict:
    """`model.score` in-process, and the exported SavedModel's serving_default signature."""
    from mhp_keras.export import export_saved_model

    images = random_images(mode.score_images, model.image_size, model.channels, seed=2)
    score_rate = images_per_s(lambda: model.score(images, batch_size=mode.batch), len(images), 3)
    start = time.perf_counter()
    path = export_saved_model(model, os.path.join(workdir, "export"), "conad", 1)
    export_s = time.perf_counter() - start
    serving = tf.saved_model.load(path).signatures["serving_default"]
    batches = [
        tf.constant((images[i : i + mode.batch] * 255).astype(np.uint8))
        for i in range(0, len(images), mode.batch)
    ]

    def serve():
        for batch in batches:
            serving(images=batch)["anomaly_score"].numpy()

    return {
        "hypotheses": model.hypotheses,
        "images": len(images),
        "batch": mode.batch,
        "score_images_per_s": score_rate,
        "saved_model_images_per_s": images_per_s(serve, len(images), 3),
        "export_s": export_s,
    }


# -- input pipeline -----------------------------------------------------------------------------


def write_pngs(directory: str, n: int, size: int, channels: int) -> list[str]:
    """n random PNGs, a little larger than the model input so the pipeline really resizes."""
    rng = np.random.default_rng(3)
    paths = []
    for i in range(n):
        pixels = rng.integers(0, 256, (size + size // 4, size + size // 4, channels), np.uint8)
        path = os.path.join(directory, f"img_{i:05d}.png")
        tf.io.write_file(path, tf.io.encode_png(pixels))
        paths.append(path)
    return paths


def timed_epoch(runner: TrainRunner, iterator, steps: int) -> float:
    """Seconds for one epoch's worth of `steps` training steps drawn from `iterator`."""
    start = time.perf_counter()
    for _ in range(steps):
        runner.step(iterator)
    return time.perf_counter() - start


def iterator_teardown_s(runner: TrainRunner, dataset: tf.data.Dataset, steps: int) -> float:
    """Seconds to delete a used one-pass iterator: what fit would pay per epoch without the
    repeated iterator that training uses (`experiment.repeated`)."""
    iterator = iter(dataset)
    timed_epoch(runner, iterator, steps)
    start = time.perf_counter()
    del iterator
    return time.perf_counter() - start


def measure_pipeline(runner: TrainRunner, mode: Mode, workdir: str) -> dict:
    """Training epochs fed by the real PNG pipeline against the same steps fed from memory."""
    from mhp_keras.data.base import ImageSet
    from mhp_keras.data.pipeline import make_dataset

    model = runner.model
    n = mode.pipeline_images
    png_dir = os.path.join(workdir, "pngs")
    os.makedirs(png_dir)
    paths = write_pngs(png_dir, n, model.image_size, model.channels)
    images = ImageSet(labels=np.zeros(n), ids=[f"{i}" for i in range(n)], paths=paths)
    piped = make_dataset(
        images,
        channels=model.channels,
        image_size=model.image_size,
        batch_size=mode.batch,
        training=True,
    )
    in_memory = memory_dataset(random_images(n, model.image_size, model.channels, 4), mode.batch)
    steps = -(-n // mode.batch)
    # As in training: one iterator over the repeated dataset, epochs as runs of `steps` steps.
    piped_it, memory_it = iter(piped.repeat()), iter(in_memory.repeat())
    first = timed_epoch(runner, piped_it, steps)  # decodes, resizes and fills the cache
    piped_s, memory_s = [], []
    for _ in range(mode.pipeline_epochs):
        memory_s.append(timed_epoch(runner, memory_it, steps))
        piped_s.append(timed_epoch(runner, piped_it, steps))
    del piped_it, memory_it
    teardown_s = iterator_teardown_s(runner, piped, steps)
    with_teardown = [s + teardown_s for s in piped_s]
    return {
        "images": n,
        "steps_per_epoch": steps,
        "timed_epochs": mode.pipeline_epochs,
        "first_epoch_s": first,
        "pipeline_epoch_s": median(piped_s),
        "memory_epoch_s": median(memory_s),
        "pipeline_images_per_s": n / median(piped_s),
        "memory_images_per_s": n / median(memory_s),
        "ratio": paired_ratio(memory_s, piped_s),
        "iterator_teardown_s": teardown_s,
        "ratio_with_teardown": paired_ratio(memory_s, with_teardown),
        "note": "epochs 2+ after the cache fill, alternating with memory-fed epochs, each from "
        "one iterator over the repeated dataset as in training; the first (decode + resize + "
        "cache) epoch is first_epoch_s. ratio_with_teardown adds deleting a one-pass iterator "
        "per epoch, which fit would pay without the repeated dataset",
    }


# -- peak memory (in a child process) -----------------------------------------------------------


def memory_probe(spec_json: str) -> None:
    """Child-process entry point: fits one model and prints its memory use as JSON."""
    spec = json.loads(spec_json)
    keras.utils.set_random_seed(0)
    after_import = read_status_mb("VmRSS")
    model = build_model(model_config(spec["hypotheses"], spec["image_size"], spec["channels"]))
    after_build = read_status_mb("VmRSS")
    images = random_images(spec["batch"] * 2, spec["image_size"], spec["channels"])
    dataset = memory_dataset(images, spec["batch"]).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=spec["steps"], verbose=0)
    print(
        json.dumps(
            {
                "rss_after_import_mb": after_import,
                "rss_after_build_mb": after_build,
                "rss_end_mb": read_status_mb("VmRSS"),
                # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so the child would
                # report the (much larger) benchmark process it was forked from.
                "peak_rss_mb": read_status_mb("VmHWM"),
            }
        )
    )


def start_memory_probe(mode: Mode) -> tuple[subprocess.Popen, dict]:
    """Starts `memory_probe` for H=8 at the main size in a fresh process, so nothing else counts."""
    spec = dict(
        hypotheses=MAIN_H,
        image_size=mode.image_size,
        channels=mode.channels,
        batch=mode.batch,
        steps=mode.memory_steps,
    )
    code = f"from mhp_keras.benchmark import memory_probe; memory_probe({json.dumps(spec)!r})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return process, spec


def finish_memory_probe(probe) -> dict:
    """The probe's memory figures (MiB) and what it trained."""
    process, spec = probe
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(spec)
    return result


# -- mixed precision ----------------------------------------------------------------------------


def bfloat16_checks(runner: TrainRunner) -> dict:
    """Under mixed_bfloat16: compute in bfloat16; variables, Gaussians, NLL and losses in float32;
    everything finite."""
    model = runner.model
    images = tf.constant(random_images(2, model.image_size, model.channels))
    means, log_vars = model(images)
    nll = losses.gaussian_nll(images, means, log_vars)
    per_sample = model._compute_losses(images, training=False)  # what train_step reduces
    scores, _ = model.score(images.numpy())
    return {
        "decoder_compute_dtype": model.decoder.compute_dtype,
        # The heads' Gaussians are float32 by design (see HypothesisHeads.native).
        "decoder_output_dtype": means.dtype.name,
        "variable_dtype": str(model.trainable_variables[0].dtype),
        "nll_dtype": nll.dtype.name,
        "loss_dtype": per_sample["loss"].dtype.name,
        "d_loss_dtype": per_sample["d_loss"].dtype.name,
        "loss_finite": bool(np.isfinite(float(runner.logs["loss"]))),
        "score_finite": bool(np.isfinite(scores).all()),
        "trained_steps": int(model.g_optimizer.iterations.numpy()),
    }


# -- the run ------------------------------------------------------------------------------------


def try_runner(config, dataset, warmup):
    """A warmed-up TrainRunner, or the error that building or training it raised."""
    try:
        runner = TrainRunner(build_model(config), dataset)
        runner.warm_up(warmup)
        return runner, None
    except Exception as e:  # reported in the results, not fatal
        return None, f"{type(e).__name__}: {e}"


def build_runners(mode: Mode) -> tuple[dict, dict]:
    """Warmed-up runners for every 32x32 variant; errors of the optional ones (bf16, XLA)."""
    s, c = mode.image_size, mode.channels
    dataset = memory_dataset(random_images(mode.batch * 4, s, c), mode.batch)
    runners, errors = {}, {}
    for h in mode.hypotheses:
        runners[f"H={h}"] = TrainRunner(build_model(model_config(h, s, c)), dataset)
        runners[f"H={h}"].warm_up(mode.warmup)
    variants = {
        "separate_heads": model_config(MAIN_H, s, c, fused=False),
        "bfloat16": model_config(MAIN_H, s, c, mixed="bfloat16"),
        # For the cost of hypotheses under bfloat16 (the `auto` default on CPUs that have it).
        "bfloat16_H=1": model_config(1, s, c, mixed="bfloat16"),
        "xla": model_config(MAIN_H, s, c, jit=True),
    }
    for name, config in variants.items():
        runner, error = try_runner(config, dataset, mode.warmup)
        if runner is None:
            errors[name] = error
        else:
            runners[name] = runner
    return runners, errors


def variant_result(name, runners, times, errors, batch) -> dict:
    """A variant's throughput and its speed-up over the default H=8 model (> 1: faster)."""
    if name not in times:
        keys = ("step_ms", "best_step_ms", "images_per_s", "rounds_ms", "first_step_s", "speedup")
        return {"supported": False, "error": errors.get(name), **dict.fromkeys(keys)}
    return {
        "supported": True,
        **train_summary(times[name], batch),
        "first_step_s": runners[name].first_step_s,
        "speedup": paired_ratio(times[f"H={MAIN_H}"], times[name]),
    }


def measure_training(mode: Mode) -> tuple[dict, dict]:
    """The 32x32 hypothesis sweep and variants, timed round-robin; returns results and runners."""
    runners, errors = build_runners(mode)
    times = round_robin(runners, mode.repeats, mode.steps)
    sweep = {
        str(h): {
            **train_summary(times[f"H={h}"], mode.batch),
            "first_step_s": runners[f"H={h}"].first_step_s,
        }
        for h in mode.hypotheses
    }
    result = {
        "train": {
            "image_size": mode.image_size,
            "channels": mode.channels,
            "batch": mode.batch,
            "rounds": mode.repeats,
            "steps_per_round": mode.steps,
            "by_hypotheses": sweep,
            "h8_over_h1": paired_ratio(times[f"H={MAIN_H}"], times["H=1"]),
        },
        "separate_heads": variant_result("separate_heads", runners, times, errors, mode.batch),
        "bfloat16": variant_result("bfloat16", runners, times, errors, mode.batch),
        "xla": variant_result("xla", runners, times, errors, mode.batch),
    }
    # The before/after of fusing the heads: > 1 when the fused default is faster.
    separate = result["separate_heads"]
    separate["fused_speedup"] = (
        paired_ratio(times["separate_heads"], times[f"H={MAIN_H}"])
        if separate["supported"]
        else None
    )
    result["bfloat16"]["h8_over_h1"] = (
        paired_ratio(times["bfloat16"], times["bfloat16_H=1"])
        if "bfloat16" in times and "bfloat16_H=1" in times
        else None
    )
    result["bfloat16"]["checks"] = (
        bfloat16_checks(runners["bfloat16"]) if "bfloat16" in runners else None
    )
    return result, runners


def measure_big(mode: Mode) -> dict:
    """H=8 training at the large image size."""
    s, c = mode.big_size, mode.channels
    dataset = memory_dataset(random_images(mode.big_batch * 2, s, c), mode.big_batch)
    runner = TrainRunner(build_model(model_config(MAIN_H, s, c)), dataset)
    runner.warm_up(1)
    seconds = [time_steps(runner, mode.big_steps) for _ in range(mode.big_repeats)]
    return {
        "hypotheses": MAIN_H,
        "image_size": s,
        "channels": c,
        "batch": mode.big_batch,
        "first_step_s": runner.first_step_s,
        **train_summary(seconds, mode.big_batch),
    }


def recommendations(results) -> dict:
    """Defaults to keep: an option only becomes the default where it clearly wins (> 5%)."""
    defaults = base_config()
    wins = lambda entry: bool(entry["supported"] and entry["speedup"] > 1.05)
    fused_speedup = results["separate_heads"]["fused_speedup"]
    return {
        "fused_heads": {
            "current": defaults.model.fused_heads,
            "recommended": fused_speedup is None or fused_speedup >= 1.0,
        },
        "mixed_precision": {
            "current": defaults.train.mixed_precision,
            "recommended": "bfloat16" if wins(results["bfloat16"]) else "none",
            # bfloat16 is only fast with native support (avx512_bf16 / AMX, TPU, recent GPUs).
            "cpu_bf16": results["machine"]["cpu_bf16"],
        },
        "jit_compile": {"current": defaults.train.jit_compile, "recommended": wins(results["xla"])},
    }


def run(mode_name: str = "full", output_dir: str = os.path.join("runs", "benchmark")) -> dict:
    """Runs every measurement of `mode_name`; writes benchmark.json and benchmark.md."""
    mode = MODES[mode_name]
    start = time.perf_counter()
    sections = {}

    def timed(name, fn, *args):
        begin = time.perf_counter()
        value = fn(*args)
        sections[name] = time.perf_counter() - begin
        return value

    keras.utils.set_random_seed(0)
    # Only where timings mean nothing (smoke) does the memory probe run alongside the rest.
    probe = start_memory_probe(mode) if mode.concurrent_memory_probe else None
    results = {"mode": mode.name, "settings": dataclasses.asdict(mode), "machine": machine_info()}
    peak_start = timed("matmul_peak", matmul_peak, mode.matmul_sizes, mode.matmul_repeats)
    training, runners = timed("train", measure_training, mode)
    results.update(training)
    results["train_big"] = timed("train_big", measure_big, mode)
    main = runners[f"H={MAIN_H}"]
    with tempfile.TemporaryDirectory(prefix="mhp_benchmark_") as workdir:
        results["pipeline"] = timed("pipeline", measure_pipeline, main, mode, workdir)
        results["inference"] = timed("inference", measure_inference, main.model, mode, workdir)
    results["memory"] = timed("memory", finish_memory_probe, probe or start_memory_probe(mode))
    # The peak is measured at both ends of the run and the better kept: other load only lowers it.
    peak_end = timed("matmul_peak_end", matmul_peak, mode.matmul_sizes, mode.matmul_repeats)
    results["matmul_peak"] = max(peak_start, peak_end, key=lambda p: p["flops_per_s"])
    results["matmul_peak"]["start_and_end_flops_per_s"] = [
        peak_start["flops_per_s"],
        peak_end["flops_per_s"],
    ]
    results["flops"] = timed("flops", flops_summary, runners, mode, results)
    results["ratios"] = ratios(results)
    results["recommendations"] = recommendations(results)
    results["machine"]["load_average_end"] = list(os.getloadavg())
    results["section_s"] = sections
    results["elapsed_s"] = time.perf_counter() - start
    write_outputs(results, output_dir)
    return results


def flops_summary(runners, mode, results) -> dict:
    """FLOPs per image at H=1 and H=8, and the achieved training rate against the matmul peak."""
    flops = {f"H={h}": flops_per_image(runners[f"H={h}"].model, mode) for h in (1, MAIN_H)}
    rate = results["train"]["by_hypotheses"][str(MAIN_H)]["images_per_s"]
    achieved = flops[f"H={MAIN_H}"]["train_step"] * rate
    return {
        "method": "TF flop registry (tf.compat.v1.profiler float_operation) over the executed ops "
        "of concrete-function graphs; per image; 2 FLOPs per multiply-add",
        "per_image": flops,
        "train_h8_over_h1": flops[f"H={MAIN_H}"]["train_step"] / flops["H=1"]["train_step"],
        "achieved_train_flops_per_s": achieved,
        "fraction_of_matmul_peak": achieved / results["matmul_peak"]["flops_per_s"],
    }


def ratios(results) -> dict:
    """The headline ratios and whether they meet their targets."""
    h8_over_h1 = results["train"]["h8_over_h1"]
    pipeline = results["pipeline"]["ratio"]
    return {
        "train_h8_over_h1": h8_over_h1,
        "train_h8_over_h1_target": TARGET_H8_OVER_H1,
        "train_h8_over_h1_ok": h8_over_h1 <= TARGET_H8_OVER_H1,
        "train_h8_over_h1_bfloat16": results["bfloat16"]["h8_over_h1"],
        "pipeline_over_memory": pipeline,
        "pipeline_over_memory_target": TARGET_PIPELINE,
        "pipeline_over_memory_ok": pipeline >= TARGET_PIPELINE,
        "fused_over_separate_heads": results["separate_heads"]["fused_speedup"],
        "bfloat16_over_float32": results["bfloat16"]["speedup"],
        "xla_over_default": results["xla"]["speedup"],
    }


# -- report -------------------------------------------------------------------------------------


def _fmt(value, spec=".1f", unit=""):
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def markdown_rows(r: dict) -> list[tuple[str, str, str]]:
    t, s, b = r["train"], f"{r['train']['image_size']}x{r['train']['image_size']}", r["train_big"]
    c = t["channels"]
    rows = [
        (
            f"train {s}x{c}, H={h}, batch {t['batch']}",
            _fmt(v["images_per_s"], ".0f", " img/s"),
            f"{v['step_ms']:.0f} ms/step (best {v['best_step_ms']:.0f})",
        )
        for h, v in t["by_hypotheses"].items()
    ]
    big = f"{b['image_size']}x{b['image_size']}x{b['channels']}"
    ratios = r["ratios"]
    rows += [
        (
            f"train {big}, H={b['hypotheses']}, batch {b['batch']}",
            _fmt(b["images_per_s"], ".1f", " img/s"),
            f"{b['step_ms']:.0f} ms/step",
        ),
        (
            f"step time H={MAIN_H} / H=1",
            _fmt(ratios["train_h8_over_h1"], ".2f"),
            f"target <= {TARGET_H8_OVER_H1}: {_verdict(ratios['train_h8_over_h1_ok'])}; "
            f"FLOP ratio {r['flops']['train_h8_over_h1']:.2f}",
        ),
        (
            f"step time H={MAIN_H} / H=1, mixed_bfloat16",
            _fmt(ratios["train_h8_over_h1_bfloat16"], ".2f"),
            "the float32 ratio above carries the target",
        ),
        (
            f"fused / separate heads (H={MAIN_H})",
            _fmt(ratios["fused_over_separate_heads"], ".2f", "x"),
            f"separate heads: {_fmt(r['separate_heads']['images_per_s'], '.0f', ' img/s')}",
        ),
        (
            "pipeline / in-memory training (epochs 2+)",
            _fmt(ratios["pipeline_over_memory"], ".3f"),
            f"target >= {TARGET_PIPELINE}: {_verdict(ratios['pipeline_over_memory_ok'])}; "
            f"{r['pipeline']['ratio_with_teardown']:.3f} counting the "
            f"{r['pipeline']['iterator_teardown_s']:.2f} s iterator teardown per epoch; "
            f"first epoch (cache fill) {r['pipeline']['first_epoch_s']:.2f} s",
        ),
        (
            f"model.score (H={MAIN_H})",
            _fmt(r["inference"]["score_images_per_s"], ".0f", " img/s"),
            "in-process",
        ),
        (
            "SavedModel serving_default",
            _fmt(r["inference"]["saved_model_images_per_s"], ".0f", " img/s"),
            "uint8 input, loaded in-process",
        ),
        (
            f"peak RSS, fit H={MAIN_H} {s}x{c}",
            _fmt(r["memory"]["peak_rss_mb"], ".0f", " MiB"),
            f"VmHWM of a child process; {r['memory']['rss_after_import_mb']:.0f} MiB after imports",
        ),
    ]
    for h, f in r["flops"]["per_image"].items():
        rows.append(
            (
                f"FLOPs/image {h}",
                f"{f['forward'] / 1e6:.1f} M forward",
                f"{f['train_step'] / 1e6:.1f} M per train step",
            )
        )
    rows += [
        (
            "achieved training FLOP/s",
            _fmt(r["flops"]["achieved_train_flops_per_s"] / 1e9, ".1f", " GFLOP/s"),
            f"{100 * r['flops']['fraction_of_matmul_peak']:.0f}% of the measured matmul peak "
            f"({r['matmul_peak']['flops_per_s'] / 1e9:.0f} GFLOP/s)",
        ),
    ]
    for key, label in (("bfloat16", "mixed_bfloat16"), ("xla", "XLA (jit_compile)")):
        v = r[key]
        note = (
            "not supported: " + str(v["error"])
            if not v["supported"]
            else (f"{v['images_per_s']:.0f} img/s; first step {v['first_step_s']:.1f} s")
        )
        rows.append((f"{label} / default (H={MAIN_H})", _fmt(v["speedup"], ".2f", "x"), note))
    return rows


def to_markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"# mhp_keras benchmark ({r['mode']})",
        "",
        f"{m['cpu_count']} CPUs, {m['platform']}, TF {m['tensorflow']}, Keras {m['keras']}; "
        f"load average {m['load_average_start'][0]:.2f} at start, "
        f"{m['load_average_end'][0]:.2f} at end; {r['elapsed_s']:.0f} s. Throughputs are medians "
        "over rounds; ratios are medians of per-round ratios, measured interleaved in one run.",
        "",
        "| measurement | value | note |",
        "|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in markdown_rows(r)]
    rec = r["recommendations"]
    lines += [
        "",
        "Defaults: "
        + "; ".join(f"{k} {v['current']} -> recommended {v['recommended']}" for k, v in rec.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, output_dir: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, "benchmark.json"), results)
    write_text_atomic(os.path.join(output_dir, "benchmark.md"), to_markdown(results))


def define_flags() -> None:
    """The command-line flags; defined only when run as a script, so importing this module next
    to another with absl flags (predict's --output_dir, in one pytest process) does not clash."""
    flags.DEFINE_bool("quick", False, "Fewer steps and repeats: under 3 minutes on 2 cores.")
    flags.DEFINE_bool("smoke", False, "Test only: one step of everything at tiny sizes.")
    flags.DEFINE_string(
        "output_dir", os.path.join("runs", "benchmark"), "Where benchmark.json and .md are written."
    )


def main(argv):
    del argv
    values = flags.FLAGS
    mode = "smoke" if values.smoke else "quick" if values.quick else "full"
    results = run(mode, values.output_dir)
    print(json.dumps(results, indent=2, sort_keys=True, default=str))
    print(to_markdown(results))


if __name__ == "__main__":
    define_flags()
    app.run(main)
