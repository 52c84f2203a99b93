"""`--mode=benchmark_classes`: every class in turn, N seeds, a per-class table with mean and std."""

import json
import os
import subprocess
import sys

import pytest

from mhp_keras.class_benchmark import summarise, to_markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_summary_table_mean_and_std():
    rows = summarise(
        {
            "a": [{"image_auroc": 0.8}, {"image_auroc": 0.6}],
            "b": [{"image_auroc": 1.0}, {"image_auroc": 1.0}],
        }
    )
    assert rows[0]["image_auroc_mean"] == pytest.approx(0.7)
    assert rows[0]["image_auroc_std"] == pytest.approx(0.1)
    assert rows[-1]["class"] == "mean" and rows[-1]["image_auroc_mean"] == pytest.approx(0.85)
    table = to_markdown(rows)
    assert "| a | 0.700 ± 0.100 |" in table and "| **mean** | 0.850 ± 0.150 |" in table


@pytest.mark.slow
def test_benchmark_classes_mode_writes_tables(tmp_path):
    command = [
        sys.executable,
        os.path.join(ROOT, "train_main.py"),
        "--mode=benchmark_classes",
        "--seeds=2",
        f"--workdir={tmp_path}",
        "--config.eval.classes=0,7",
        "--config.data.max_train=48",
        "--config.model.hypotheses=2",
        "--config.model.latent_dim=4",
        "--config.model.base_filters=8",
        "--config.model.disc_base_filters=8",
        "--config.train.epochs=1",
        "--config.train.verbose=0",
        "--config.eval.report=False",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = (tmp_path / "classes.md").read_text()
    assert "| 0 |" in table and "| 7 |" in table and "**mean**" in table
    runs = json.loads((tmp_path / "classes.json").read_text())["runs"]
    assert len(runs["0"]) == 2 and len(runs["7"]) == 2
    assert (tmp_path / "classes.csv").read_text().startswith("class,seeds,image_auroc_mean")
    # Different seeds are different runs.
    assert runs["0"][0]["image_auroc"] != runs["0"][1]["image_auroc"]
