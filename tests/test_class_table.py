"""`--mode=benchmark_classes`: every class in turn, N seeds, a per-class table with mean and std.

It is `--mode=ablation` with one variant, the config as given (tests/test_ablation.py tests the
shared loop); these tests pin what it keeps of its own: the folders and the per-class tables."""

import json
import subprocess

import pytest
from cli_helpers import ENV, ROOT, tiny_flags, train_main_command

from mhp_keras.studies.class_table import summarise, to_markdown


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
    command = train_main_command(
        "--mode=benchmark_classes",
        "--seeds=2",
        f"--workdir={tmp_path}",
        "--config.eval.classes=0,7",
        *tiny_flags(epochs=1, max_train=48),
    )
    result = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "benchmark_classes: 4/4 runs done (0 reused)" in result.stdout
    assert "RESULT per-class table written to" in result.stdout
    # No variant folder: the layout of workdirs made before the ablation existed.
    assert (tmp_path / "class_7" / "seed_1" / "metrics.json").exists()
    assert not (tmp_path / "ablation.md").exists()
    table = (tmp_path / "classes.md").read_text()
    assert "| 0 |" in table and "| 7 |" in table and "**mean**" in table
    runs = json.loads((tmp_path / "classes.json").read_text())["runs"]
    assert len(runs["0"]) == 2 and len(runs["7"]) == 2
    assert (tmp_path / "classes.csv").read_text().startswith("class,seeds,image_auroc_mean")
    # Different seeds are different runs.
    assert runs["0"][0]["image_auroc"] != runs["0"][1]["image_auroc"]
