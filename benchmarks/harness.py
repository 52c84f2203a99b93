"""Runs every measurement of the speed benchmark in order and collects one results dict.

The order matters: the matmul peak is taken at both ends of the run (other load only lowers it),
the 32x32 runners are built once and reused by the pipeline, inference and FLOP measurements, and
the memory probe runs in a child process, alongside the rest only in the test-only smoke mode.
Each section's duration is recorded in `section_s`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from benchmarks.flops import flops_summary, matmul_peak
from benchmarks.measure import measure_inference, measure_pipeline
from benchmarks.memory import finish_memory_probe, start_memory_probe
from benchmarks.modes import MAIN_H, MODES
from benchmarks.report import ratios, recommendations, write_outputs
from benchmarks.tiled import measure_tiled
from benchmarks.training import measure_big, measure_training
from mhp_keras.hardware import cpu_flags, cpu_model_name


def machine_info() -> dict:
    flags_ = cpu_flags()
    return {
        "cpu_model": cpu_model_name(),
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
    results["tiled"] = timed(
        "tiled", measure_tiled, mode.tiled_side, mode.tiled_big_side, mode.tiled_repeats
    )
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
