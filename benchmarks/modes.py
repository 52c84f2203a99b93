"""The sizes, repetition counts and targets of the speed benchmark, in one place.

Every measurement module and the report read the same `Mode` and the same targets, so a run's
settings (recorded in its JSON) describe all of it.
"""

from __future__ import annotations

import dataclasses

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
    tiled_side: int = 1024  # tiled scoring speed on one image of this side
    tiled_big_side: int = 4096  # peak memory of tiled scoring of one image of this side
    tiled_repeats: int = 3


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
        tiled_side=128,
        tiled_big_side=256,
        tiled_repeats=1,
    ),
}
