"""Peak memory of a training run, measured in a child process of its own.

The benchmark process holds many models at once, so its own high-water mark says nothing about
one training run. The child builds and fits one H=8 model and reports VmRSS after imports and
after the build, and its VmHWM (peak RSS) at the end, as one JSON line on stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras

from benchmarks.modes import MAIN_H, Mode
from benchmarks.steps import build_model, memory_dataset, model_config, random_images

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
    code = f"from benchmarks.memory import memory_probe; memory_probe({json.dumps(spec)!r})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    # The repository root, so the child imports these benchmarks and mhp_keras from any cwd.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
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
