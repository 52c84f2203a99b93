"""The package reads as its pipeline, and every module path of the flat layout before it still
imports: as the very same module, so a monkeypatch through either name reaches both."""

import importlib
import pathlib

import pytest

import mhp_keras
from mhp_keras import _moved

PACKAGE = pathlib.Path(mhp_keras.__file__).parent
STAGES = ["cli", "config", "data", "models", "scoring", "serving", "studies", "training"]


@pytest.mark.parametrize("old, new", sorted(_moved.MOVED.items()))
def test_old_module_paths_are_the_new_modules(old, new):
    assert importlib.import_module(f"mhp_keras.{old}") is importlib.import_module(
        f"mhp_keras.{new}"
    )
    assert (PACKAGE / (new.replace(".", "/") + ".py")).is_file()
    assert not (PACKAGE / f"{old}.py").exists()  # no second copy under the old name


def test_from_imports_of_old_names_work():
    from mhp_keras.export import export_saved_model

    from mhp_keras import calibration, losses  # noqa: F401
    from mhp_keras.serving.export import export_saved_model as moved

    assert export_saved_model is moved


def test_the_top_level_names_users_import():
    from mhp_keras import ConAD, build_conad, load_model  # noqa: F401

    assert mhp_keras.ConAD.__module__ == "mhp_keras.models.conad"


def test_the_package_is_grouped_by_stage_with_small_modules():
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__")
    assert folders == STAGES
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        assert len(lines) <= 400, f"{path} has {len(lines)} lines"
        assert lines and lines[0].startswith('"""'), f"{path} opens without a docstring"
