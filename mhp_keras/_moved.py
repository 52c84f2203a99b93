"""Old module paths, kept importable after the package was grouped into its pipeline stages.

Until the 0.2 layout every module sat directly in `mhp_keras/`; user code and notebooks import
them as `mhp_keras.export`, `mhp_keras.config_defaults` and so on. This finder makes each old name
an alias of the module that now holds the code (the very same module object, so a monkeypatch
through either name is seen by both), without a file per old name cluttering the tree.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

# Old module (below mhp_keras) -> where it lives now.
MOVED = {
    "config_defaults": "config.defaults",
    "config_validation": "config.validation",
    "model_settings": "config.model_settings",
    "losses": "training.losses",
    "experiment": "training.experiment",
    "callbacks": "training.callbacks",
    "recovery": "training.recovery",
    "training_health": "training.health",
    "jit_calibration": "training.jit",
    "distribute": "training.distribute",
    "tiling": "scoring.tiling",
    "calibration": "scoring.calibration",
    "metrics": "scoring.metrics",
    "evaluation": "scoring.evaluation",
    "reports": "scoring.reports",
    "eval_callback": "scoring.auroc_callback",
    "export": "serving.export",
    "predict": "serving.predict",
    "ablation": "studies.ablation",
    "class_table": "studies.class_table",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module):
        pass  # the target module ran when it was imported


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Resolves `mhp_keras.<old name>` to the module that replaced it."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != "mhp_keras" or name not in MOVED:
            return None
        new = f"mhp_keras.{MOVED[name]}"
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
