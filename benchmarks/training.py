"""The training-speed measurements: what extra hypotheses cost, and what each option buys.

All 32x32 variants (H = 1..16, separate heads, bfloat16 at H = 8 and 1, XLA) are built first and
then timed round-robin, so slow drift in machine load hits them all alike; the large-image run is
timed on its own. The bfloat16 model is also checked for where it computes in bfloat16 and where it
keeps float32.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from benchmarks.modes import MAIN_H, Mode
from benchmarks.steps import (
    TrainRunner,
    build_model,
    memory_dataset,
    model_config,
    paired_ratio,
    random_images,
    round_robin,
    time_steps,
    train_summary,
)
from mhp_keras.training import losses


def bfloat16_checks(runner: TrainRunner) -> dict:
    """Under mixed_bfloat16: compute in bfloat16; variables, Gaussians, NLL and losses in float32;
    everything finite."""
    model = runner.model
    images = tf.constant(random_images(2, model.image_size, model.channels))
    means, log_vars = model(images)
    nll = losses.gaussian_nll(images, means, log_vars)
    per_sample = model.per_sample_losses(images, training=False)  # what train_step reduces
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
        # The cost of hypotheses without the discriminator (MHP-WTA), where it is all decoder.
        "mhp_wta_H=1": model_config(1, s, c, adversarial=False),
        f"mhp_wta_H={MAIN_H}": model_config(MAIN_H, s, c, adversarial=False),
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
    wta = ("mhp_wta_H=1", f"mhp_wta_H={MAIN_H}")
    result["mhp_wta"] = {
        "supported": all(name in times for name in wta),
        "h8_over_h1": (
            paired_ratio(times[wta[1]], times[wta[0]]) if all(n in times for n in wta) else None
        ),
        "by_hypotheses": {
            name.split("=")[1]: train_summary(times[name], mode.batch)
            for name in wta
            if name in times
        },
    }
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
