"""`train_main.py` end to end on a tiny config, and its handling of user mistakes."""

import json
import os

import pytest
from cli_helpers import run, tiny_flags, train_main_command

TINY = tiny_flags(report=True)


def run_main(*args):
    return run(train_main_command(*args))


@pytest.mark.slow
def test_train_and_evaluate_writes_metrics(tmp_path):
    workdir = tmp_path / "run"
    result = run_main("--config=configs/digits.py", f"--workdir={workdir}", *TINY)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "RESULT image_auroc=" in result.stdout
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    assert metrics["n_test"] == 539 and metrics["n_anomalous"] == 486
    assert metrics["config"]["model"]["hypotheses"] == 2
    assert (workdir / "model.keras").exists()
    assert (workdir / "checkpoints" / "last.keras").exists()
    assert (workdir / "scores.csv").read_text().startswith("id,label,score,predicted")
    assert any((workdir / "logs").iterdir())
    assert {"roc.png", "histogram.png", "examples.png"} <= set(os.listdir(workdir / "report"))
    assert os.listdir(workdir / "export" / "conad") == ["1"]
    # --mode=export writes the next version from model.keras.
    exported = run_main(
        "--config=configs/digits.py", f"--workdir={workdir}", *TINY, "--mode=export"
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert sorted(os.listdir(workdir / "export" / "conad")) == ["1", "2"]
    # --mode=evaluate re-scores with the stored model and threshold.
    evaluated = run_main(
        "--config=configs/digits.py", f"--workdir={workdir}", *TINY, "--mode=evaluate"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads((workdir / "metrics.json").read_text())
    assert again["image_auroc"] == metrics["image_auroc"]
    assert again["threshold"] == metrics["threshold"]
    # ... and keeps what metrics.json said of the training.
    for key in ("epochs", "jit_compile", "mechanism", "recoveries"):
        assert again[key] == metrics[key], key
    assert again["timings"]["train_seconds"] == metrics["timings"]["train_seconds"]
    assert again["timings"]["eval_seconds"] > 0


@pytest.mark.parametrize(
    "flag,expected",
    [
        ("--config.model.hypotheses=0", "model.hypotheses=0"),
        ("--config.data.image_size=48", "data.image_size=48"),
        ("--config.score.topk_fraction=1.5", "score.topk_fraction=1.5"),
        ("--config.data.name=imagenet", "data.name='imagenet'"),
        ("--config.data.normal_class=12", "data.normal_class='12'"),
        ("--config.model.latent_dim=0", "model.latent_dim=0"),
        ("--config.data.name=folders --config.data.root=/no/such/dir", "/no/such/dir"),
        ("--config.train.g_lr=inf", "train.g_lr=inf: expected a finite number"),
        ("--config.loss.kl_weight=-inf", "loss.kl_weight=-inf: expected a finite number"),
    ],
)
def test_bad_config_values_give_a_clear_error(tmp_path, flag, expected):
    result = run_main(f"--workdir={tmp_path}", *TINY, *flag.split())
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []  # refused before anything was written


def test_evaluate_without_a_trained_model_says_so(tmp_path):
    result = run_main(f"--workdir={tmp_path}", *TINY, "--mode=evaluate")
    assert result.returncode == 2
    assert "No trained model" in result.stderr and "Traceback" not in result.stderr


def test_mode_flag_comes_from_the_registry():
    import sys

    from mhp_keras.training import modes

    # In a child process: train_main defines absl flags, which other tests' modules define too.
    code = (
        "import train_main; from absl import flags; f = flags.FLAGS['mode']; "
        "print(','.join(f.parser.enum_values)); print(f.default)"
    )
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    choices, default = result.stdout.strip().splitlines()[-2:]
    assert choices.split(",") == list(modes.MODES) and default == modes.DEFAULT
    for name, mode in modes.MODES.items():
        assert callable(modes.load_runner(name)), name
        assert (name in modes.EXPERIMENT_MODES) != mode.study
