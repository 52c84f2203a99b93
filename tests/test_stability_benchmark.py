"""`benchmarks/stability.py` reads each run's files into its table correctly: how a run ended,
its recoveries (from metrics.json, or from the backup of a run that failed), the largest KL and
D's accuracy over the last 10 epochs. The training itself is what `train_main` tests cover."""

import csv
import json
import math

from benchmarks.stability import markdown, run_command, summarize


def write_run(workdir, history, metrics=None, recoveries=None):
    workdir.mkdir(parents=True)
    with open(workdir / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    if metrics is not None:
        (workdir / "metrics.json").write_text(json.dumps(metrics))
    if recoveries is not None:
        (workdir / "backup").mkdir()
        (workdir / "backup" / "recoveries.json").write_text(json.dumps(recoveries))


def epochs(n, kl=lambda e: float(e), d_acc=0.5):
    return [
        {"epoch": e, "kl": kl(e), "d_acc_real": d_acc + 0.1, "d_acc_fake": d_acc} for e in range(n)
    ]


def test_a_completed_run(tmp_path):
    metrics = {
        "image_auroc": 0.91,
        "pixel_auroc": 0.9,
        "aupro": 0.8,
        "recoveries": [{"cause": "training diverged: kl=inf at epoch 4, step 1"}],
        "health_warnings": ["Training health: ..."],
        "timings": {"train_seconds": 12.5},
    }
    write_run(tmp_path / "a", epochs(20, kl=lambda e: 100.0 - e, d_acc=0.7), metrics)
    row = summarize(str(tmp_path / "a"), 0, "")
    assert row["ended"] == "completed" and row["recoveries"] == 1
    assert row["recovery_causes"] == [metrics["recoveries"][0]["cause"]]
    assert row["health_warnings"] == 1 and row["max_kl"] == 100.0
    assert math.isclose(row["d_acc_last10"], 0.7)
    assert (row["image_auroc"], row["pixel_auroc"], row["train_seconds"]) == (0.91, 0.9, 12.5)
    assert row["aupro"] == 0.8
    table = markdown([{"set": "textures", "size": 128, "seed": 0} | row])
    assert "| 0.910 | 0.900 | 0.800 | 0 |" in table  # 12.5 s is 0 whole minutes


def test_a_run_that_diverged_for_good(tmp_path):
    write_run(tmp_path / "b", epochs(3), recoveries=[{"cause": "x"}, {"cause": "y"}])
    row = summarize(str(tmp_path / "b"), 2, "error: training diverged: loss=nan ...")
    assert row["ended"] == "diverged" and row["recoveries"] == 2
    assert row["image_auroc"] is None and "loss=nan" in row["error"]
    table = markdown([{"set": "border", "size": 64, "seed": 1} | row])
    assert "| border | 64 | 1 | diverged | 2 |" in table
    assert table.splitlines()[2].endswith("| - | - | - | - |")  # nothing scored, no timings
    assert "1 runs: 0 completed, 1 did not; 2 automatic recoveries in all." in table


def test_the_command_trains_the_shipped_config_at_the_size():
    command = run_command("border", 256, 2, 100, "/w", ["--config.train.d_lr=1e-4"])
    assert command[2].endswith("configs/textures_border.py")
    assert "--config.data.image_size=256" in command and "--config.seed=2" in command
    assert "--config.data.patch_size=128" in command  # the photo's limit; resized up to 256
    assert "--config.data.patch_size=32" in run_command("textures", 16, 0, 1, "/w", [])
    assert command[-1] == "--config.train.d_lr=1e-4"
