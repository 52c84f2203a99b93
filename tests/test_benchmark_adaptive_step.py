"""The split-pass benchmark (`benchmarks.adaptive_step`) at tiny sizes: both forms train and are
timed, each model's step was traced in its own form, and the package's step is restored after.
No test looks at a time."""

import pytest

from benchmarks import adaptive_step


@pytest.mark.slow
def test_adaptive_step_smoke():
    out = adaptive_step.measure(
        hypotheses=2, size=16, channels=1, batch=4, precision="none", rounds=2, steps=1, warmup=1
    )
    for form in ("split", "two_passes"):
        assert len(out[form]["rounds_ms"]) == 2
        assert all(ms > 0 for ms in out[form]["rounds_ms"])
    assert out["split_over_two_passes"] > 0
    assert out["traced"]["split"] >= 1 and out["traced"]["two_passes"] >= 1


def test_the_benchmark_restores_the_split_step():
    from mhp_keras.training import objective

    before = objective.adaptive_generator_step
    adaptive_step.measure(
        hypotheses=2, size=16, channels=1, batch=4, precision="none", rounds=1, steps=1, warmup=1
    )
    assert objective.adaptive_generator_step is before
