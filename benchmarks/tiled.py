"""Tiled inference at native resolution: its speed on one large image, and its peak memory.

Inspection images are 200-2,000 px per side and are scored on `image_size` tiles (with
`score.tiling=tile`). This measures a `tile_side` x `tile_side` image (1024 by default) scored by
`model.score` with the default stride of half a tile (tiles/s and images/s), and, in a child
process of its own so nothing else counts, the peak RSS (VmHWM) of scoring one `big_side` x
`big_side` image (4096 by default), which the tiling keeps bounded by one row of tiles.

    python -m benchmarks.tiled [--side=1024] [--big_side=4096]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.memory import REPO_ROOT, read_status_mb

TILE = 64  # the model's image_size: a common inspection tile
CHANNELS = 1  # inspection images are mostly grey


def tiled_model():
    from mhp_keras.config.defaults import base_config
    from mhp_keras.models import build_conad

    config = base_config()
    config.data.image_size = TILE
    config.data.channels = CHANNELS
    config.model.hypotheses = 8
    config.score.tiling = "tile"
    config.score.aggregate = "topk"
    return build_conad(config)


def surface(side: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((side, side, CHANNELS)).astype(np.float32)


def measure_speed(side: int, repeats: int) -> dict:
    """Median time to score one side x side image, after one warm-up call (the trace)."""
    from mhp_keras.scoring.tiling import tile_count

    model = tiled_model()
    image = surface(side)
    start = time.perf_counter()
    model.score([image])
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.score([image])
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    tiles = int(tile_count(side, TILE, model.stride)) ** 2
    return {
        "image_side": side,
        "tile": TILE,
        "stride": model.stride,
        "channels": CHANNELS,
        "hypotheses": model.hypotheses,
        "tiles_per_image": tiles,
        "seconds_per_image": seconds,
        "images_per_s": 1.0 / seconds,
        "tiles_per_s": tiles / seconds,
        "first_call_s": first,
        "repeats": repeats,
    }


def memory_probe(side: int) -> None:
    """Child-process entry point: scores one side x side image, prints its memory as JSON."""
    model = tiled_model()
    before = read_status_mb("VmRSS")
    scores, maps = model.score([surface(side)])
    print(
        json.dumps(
            {
                "image_side": side,
                "rss_before_scoring_mb": before,
                "peak_rss_mb": read_status_mb("VmHWM"),
                "map_shape": list(np.asarray(maps).shape),
                "finite": bool(np.isfinite(scores).all()),
            }
        )
    )


def measure_memory(side: int) -> dict:
    code = f"from benchmarks.tiled import memory_probe; memory_probe({side})"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600
    )
    if result.returncode != 0:
        raise RuntimeError(f"tiled memory probe failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_tiled(side: int = 1024, big_side: int = 4096, repeats: int = 3) -> dict:
    return {"speed": measure_speed(side, repeats), "memory": measure_memory(big_side)}


def main() -> None:
    from absl import app, flags

    flags.DEFINE_integer("side", 1024, "Side of the image timed.")
    flags.DEFINE_integer("big_side", 4096, "Side of the image whose peak memory is measured.")
    flags.DEFINE_integer("repeats", 3, "Timed calls (median).")

    def run(argv):
        del argv
        f = flags.FLAGS
        print(json.dumps(measure_tiled(f.side, f.big_side, f.repeats), indent=2))

    app.run(run)


if __name__ == "__main__":
    main()
