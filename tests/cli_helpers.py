"""Shared by the tests that run `train_main.py` or `mhp_keras.serving.predict` in a subprocess: the
commands, their environment and the flags of a model small enough to train in seconds."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)


def tiny_flags(epochs=2, max_train=64, report=False):
    """Config overrides for a two-head model with 8 filters and a 4-d latent."""
    return [
        f"--config.data.max_train={max_train}",
        "--config.model.hypotheses=2",
        "--config.model.latent_dim=4",
        "--config.model.base_filters=8",
        "--config.model.disc_base_filters=8",
        f"--config.train.epochs={epochs}",
        "--config.train.verbose=0",
        f"--config.eval.report={report}",
    ]


def train_main_command(*args):
    return [sys.executable, os.path.join(ROOT, "train_main.py"), *args]


def predict_command(*args):
    return [sys.executable, "-m", "mhp_keras.serving.predict", *args]


def run(command, timeout=600):
    """Runs `command` from the repository root; stdout and stderr are captured as text."""
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=ROOT, check=False
    )
