"""The `--mode`s of `train_main.py` (`mhp-train`), each named and described once.

The flag's choices and help, the experiment's own modes, the studies' dispatch and the "Modes"
section of docs/configuration.md (a test compares them) all come from `MODES`, so a new mode is
one entry here plus its runner.

This module imports neither TensorFlow nor the runners: `train_main.py` defines its flags from it
before TensorFlow is imported, and a runner is imported only when its mode runs.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

# The runner of the single-experiment modes: run(config, workdir, mode, strategy, overwrite).
EXPERIMENT = "mhp_keras.training.experiment:run"


@dataclasses.dataclass(frozen=True)
class Mode:
    """One `--mode`. `runner` is "module:function", imported when the mode runs; a runner other
    than `EXPERIMENT` is a study, run as runner(config, workdir, seeds, strategy, overwrite)."""

    # One line, for --help and docs/configuration.md (whose table a test compares with it).
    description: str
    # Whether the mode may create --workdir (checked before minutes of loading and building);
    # the others need a finished run in it.
    creates_workdir: bool
    runner: str = EXPERIMENT

    @property
    def study(self) -> bool:
        """Many experiments (classes x seeds x variants) rather than one: takes --seeds."""
        return self.runner != EXPERIMENT


DEFAULT = "train_and_evaluate"
MODES: dict[str, Mode] = {
    "train_and_evaluate": Mode(
        "train, pick the threshold on normal validation images, evaluate on the test split and "
        "export a SavedModel (the default)",
        creates_workdir=True,
    ),
    "train": Mode(
        "train, pick the threshold and export a SavedModel, without evaluating",
        creates_workdir=True,
    ),
    "evaluate": Mode(
        "evaluate the trained `model.keras` in `--workdir` with its stored threshold",
        creates_workdir=False,
    ),
    "export": Mode(
        "export the trained `model.keras` in `--workdir` again, as the next SavedModel version",
        creates_workdir=False,
    ),
    "benchmark_classes": Mode(
        "every class normal in turn (`eval.classes`; on MVTec AD every category), `--seeds` runs "
        "each; writes `classes.{csv,md,json}` (mean ± std per class)",
        creates_workdir=True,
        runner="mhp_keras.studies.ablation:run_benchmark_classes",
    ),
    "ablation": Mode(
        "`benchmark_classes` for every model variant of `eval.variants` (vae, vae-gan, mdn-H, "
        "mhp-H, mhp-wta-H, conad-H, mdn+conad-H); writes `ablation.{csv,md,json,png}` (a "
        "per-variant table with pixel metrics and the mechanism diagnostics), resumable",
        creates_workdir=True,
        runner="mhp_keras.studies.ablation:run_ablation",
    ),
}
# The modes `experiment.run` carries out itself.
EXPERIMENT_MODES = tuple(name for name, mode in MODES.items() if not mode.study)


def flag_help() -> str:
    """The `--mode` flag's help: every mode with its description."""
    return "What to run:\n" + "\n".join(f"{name}: {m.description}." for name, m in MODES.items())


def load_runner(name: str) -> Callable:
    """The function that runs mode `name` (importing its module, and with it TensorFlow)."""
    module, function = MODES[name].runner.split(":")
    return getattr(importlib.import_module(module), function)
