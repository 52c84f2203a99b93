"""Command-line entry point: train, evaluate and export a ConAD model from an ml_collections config.

    python train_main.py --config=configs/digits.py --workdir=runs/digits \\
        [--config.model.hypotheses=8 ...] [--mode=...]

Installed as `mhp-train`. The modes are described in mhp_keras/training/modes.py (and in
docs/configuration.md#modes). User mistakes (bad flags, config files, keys or values, folders) are
printed as one paragraph, without a traceback, and exit with status 2 (see mhp_keras/cli/).
TensorFlow is imported only once the flags are checked, so such mistakes are reported at once.
A run prints its epoch lines and RESULT line; `--verbosity=0` (`-v 0`) or higher adds our INFO
lines and TensorFlow's own logs (see mhp_keras/cli/).
"""

import math
import os

from absl import flags
from ml_collections import config_flags

# Imported before TensorFlow: it quiets TensorFlow's logs unless --verbosity is given.
from mhp_keras.cli import define_config_file, ensure_output_dir, run_app
from mhp_keras.training import modes

HERE = os.path.dirname(os.path.abspath(__file__))

_CONFIG = define_config_file(
    "config", os.path.join(HERE, "configs", "digits.py"), "Experiment config file (configs/*.py)."
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints, logs, metrics and exports (default: runs/<config>).",
)
_MODE = flags.DEFINE_enum("mode", modes.DEFAULT, list(modes.MODES), modes.flag_help())
_STRATEGY = flags.DEFINE_enum(
    "strategy", "default", ["default", "mirrored", "multi_worker"], "tf.distribute strategy."
)
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Discard a run with a different config in --workdir instead of refusing."
)
_SEEDS = flags.DEFINE_integer(
    "seeds",
    1,
    "Seeds per class for "
    + " and ".join(f"--mode={name}" for name, mode in modes.MODES.items() if mode.study)
    + ".",
    lower_bound=1,
)


def default_workdir() -> str:
    config_path = config_flags.get_config_filename(flags.FLAGS["config"])
    name = os.path.splitext(os.path.basename(config_path))[0]
    return os.path.join("runs", name)


def summary_line(metrics: dict) -> str:
    """The one-line RESULT of an evaluation. Undefined metrics (NaN, or null when read back from
    metrics.json) are left out, except image AUROC, which says why it is missing; without
    anomalous test images the line gives the threshold and the share of normal test images it
    flags instead."""

    def defined(key: str) -> bool:
        value = metrics.get(key)
        return value is not None and math.isfinite(value)

    no_anomalies = not metrics.get("n_anomalous")
    if defined("image_auroc"):
        parts = [f"image_auroc={metrics['image_auroc']:.4f}"]
    elif no_anomalies:
        with_normal_dir = metrics.get("config", {}).get("data", {}).get("normal_dir")
        hint = "add data.abnormal_dir" if with_normal_dir else "add anomalous test images"
        parts = [f"image_auroc=n/a (no anomalous test images: {hint})"]
    else:
        parts = ["image_auroc=n/a (no normal test images)"]
    parts += [f"{k}={metrics[k]:.4f}" for k in ("pixel_auroc", "aupro") if defined(k)]
    parts += [f"n_test={metrics.get('n_test')}", f"n_anomalous={metrics.get('n_anomalous')}"]
    flagged = metrics.get("normal_scores", {}).get("flagged_fraction")
    if no_anomalies and defined("threshold") and flagged is not None:
        parts += [f"threshold={metrics['threshold']:.4g}", f"normal_flagged={flagged:.3f}"]
    seconds = metrics.get("timings", {}).get("train_seconds")
    if seconds is not None:
        parts.append(f"train_seconds={seconds:.1f}")
    if metrics.get("recoveries"):  # automatic rollbacks after a divergence: worth a look
        parts.append(f"recoveries={len(metrics['recoveries'])}")
    return "RESULT " + " ".join(parts)


def main(argv):
    del argv  # positional arguments are refused while the flags are parsed
    workdir = _WORKDIR.value or default_workdir()
    mode = modes.MODES[_MODE.value]
    if mode.creates_workdir:
        # Before the minutes of data loading and model building that precede the first write.
        ensure_output_dir("--workdir", workdir)
    run = modes.load_runner(_MODE.value)
    if mode.study:
        # One study per workdir at a time (each of its runs also locks its own folder).
        from mhp_keras.training.distribute import writes_run_files
        from mhp_keras.training.workdir_lock import workdir_lock

        with workdir_lock(workdir, _MODE.value, enabled=writes_run_files(_STRATEGY.value)):
            result = run(_CONFIG.value, workdir, _SEEDS.value, _STRATEGY.value, _OVERWRITE.value)
        print(result["summary"])
        return
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
