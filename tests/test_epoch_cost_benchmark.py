"""The epoch-cost benchmark (`benchmarks.epoch_cost`) end to end at tiny sizes: every case runs and
counts its examples as the closed form says. No test looks at a time (on a shared CI machine they
mean nothing). About 30 s on 2 cores (three models are built and traced), so it is slow."""

import pytest

from benchmarks.epoch_cost import measure

CASE_KEYS = {
    "images",
    "examples_per_epoch",
    "steps_per_epoch",
    "first_epoch_s",
    "epoch_s",
    "examples_per_sec",
}


@pytest.mark.slow
def test_epoch_cost_smoke():
    out = measure(
        epochs=2,
        images=2,
        tiles_per_image=3,
        height=40,
        width=70,
        tile=16,
        hypotheses=2,
        every_tile=True,
    )
    for case in ("large_sampled", "small", "large_every_tile"):
        assert set(out[case]) == CASE_KEYS
        assert out[case]["epoch_s"] > 0 and out[case]["examples_per_sec"] > 0
    # 2 images x 3 tiles; 6 small images once each; every tile: 2 x (40 // 16) x (70 // 16).
    assert out["large_sampled"]["examples_per_epoch"] == 6
    assert out["small"] == out["small"] | {"images": 6, "examples_per_epoch": 6}
    assert out["large_every_tile"]["examples_per_epoch"] == 2 * 2 * 4
    assert out["sampled_over_small"] > 0
