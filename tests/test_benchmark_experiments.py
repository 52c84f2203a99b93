"""The experiments benchmark (`benchmarks.experiments`) end to end in its test-only "smoke" mode:
every experiment runs once through the real training entry, on a handful of tiny generated
images, and the report has every field. No test looks at a time: on a shared CI machine they
mean nothing."""

import json

import pytest

from benchmarks.experiments import MODES, run_experiments

RUN_KEYS = {
    "wall_s",
    "train_s",
    "epochs",
    "image_size",
    "channels",
    "batch",
    "hypotheses",
    "image_auroc",
    "jit_compile",
}


@pytest.mark.slow
def test_the_smoke_mode_runs_every_experiment_and_reports_the_auto_choice(tmp_path):
    results = run_experiments("smoke", str(tmp_path))
    names = [f"cifar_one_class/{v}" for v in MODES["smoke"].variants] + ["grey_64px_one_epoch"]
    assert list(results["experiments"]) == names
    for name, record in results["experiments"].items():
        assert set(record) == RUN_KEYS, name
        assert record["epochs"] == 1
        assert record["jit_compile"]["source"] in {"skipped", "calibrated", "shared", "forced"}
        assert isinstance(record["jit_compile"]["chosen"], bool)
    assert results["experiments"]["grey_64px_one_epoch"]["channels"] == 1
    assert results["experiments"]["cifar_one_class/vae"]["hypotheses"] == 1
    stored = json.loads((tmp_path / "experiments.json").read_text())
    assert stored["experiments"].keys() == results["experiments"].keys()
    table = (tmp_path / "experiments.md").read_text()
    assert all(f"| {name} |" in table for name in names)
