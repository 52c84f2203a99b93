"""Command-line entry point: train, evaluate and export a ConAD model from an ml_collections config.

    python train_main.py --config=configs/digits.py --workdir=runs/digits \\
        [--config.model.hypotheses=8 ...] [--mode=train_and_evaluate|train|evaluate|export]

Installed as `mhp-train`. User mistakes (bad flags, config files, keys or values, folders) are
printed as one paragraph, without a traceback, and exit with status 2 (see mhp_keras/cli.py).
TensorFlow is imported only once the flags are checked, so such mistakes are reported at once.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ start-up chatter out of logs

from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mhp_keras.cli import define_config_file, ensure_output_dir, run_app  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# Modes that write into --workdir; the others only read a finished run from it.
WRITING_MODES = ("train_and_evaluate", "train", "benchmark_classes")

_CONFIG = define_config_file(
    "config", os.path.join(HERE, "configs", "digits.py"), "Experiment config file (configs/*.py)."
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints, logs, metrics and exports (default: runs/<config>).",
)
_MODE = flags.DEFINE_enum(
    "mode",
    "train_and_evaluate",
    ["train_and_evaluate", "train", "evaluate", "export", "benchmark_classes"],
    "What to run.",
)
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Discard a run with a different config in --workdir instead of refusing."
)
_SEEDS = flags.DEFINE_integer(
    "seeds", 1, "Seeds per class for --mode=benchmark_classes.", lower_bound=1
)


def default_workdir() -> str:
    config_path = config_flags.get_config_filename(flags.FLAGS["config"])
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("runs", name)


def summary_line(metrics: dict) -> str:
    parts = [
        f"{k}={metrics[k]:.4f}"
        for k in ("image_auroc", "pixel_auroc", "aupro")
        if metrics.get(k) is not None
    ]
    parts += [f"n_test={metrics.get('n_test')}", f"n_anomalous={metrics.get('n_anomalous')}"]
    seconds = metrics.get("timings", {}).get("train_seconds")
    if seconds is not None:
        parts.append(f"train_seconds={seconds:.1f}")
    return "RESULT " + " ".join(parts)


def main(argv):
    del argv  # positional arguments are refused while the flags are parsed
    workdir = _WORKDIR.value or default_workdir()
    if _MODE.value in WRITING_MODES:
        # Before the minutes of data loading and model building that precede the first write.
        ensure_output_dir("--workdir", workdir)
    if _MODE.value == "benchmark_classes":
        from mhp_keras.class_table import run_all_classes

        result = run_all_classes(
            _CONFIG.value, workdir, seeds=_SEEDS.value, strategy=_STRATEGY.value
        )
        print(f"RESULT per-class table written to {result['markdown']}")
        return
    from mhp_keras.experiment import run

    metrics = run(_CONFIG.value, workdir, _MODE.value, _STRATEGY.value, _OVERWRITE.value)
    if "image_auroc" in metrics:
        print(summary_line(metrics) + f" workdir={workdir}")
    elif "export" in metrics:
        print(f"RESULT exported to {metrics['export']}")


def cli():
    """Console-script entry point (`mhp-train`)."""
    run_app(main)


if __name__ == "__main__":
    cli()
