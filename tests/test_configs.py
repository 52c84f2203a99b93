"""Each file in configs/ sets only what differs from the config it starts from (issue 18).

A restated default is a second definition of a setting: once the default moves, the file silently
pins the old value. The files are read as code, not run for their result: a restated key leaves
the resolved config unchanged, so only the assignments themselves show it.
"""

import ast
import importlib
import pathlib

import pytest

from mhp_keras.config.defaults import base_config
from mhp_keras.config.validation import validate_config
from mhp_keras.errors import ConfigError

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
FILES = sorted(p for p in CONFIGS.glob("*.py") if p.name != "__init__.py")


def get_config_body(path: pathlib.Path) -> list[ast.stmt]:
    tree = ast.parse(path.read_text(), filename=str(path))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    (function,) = [n for n in functions if n.name == "get_config"]
    return function.body


def dotted_key(target: ast.expr, name: str) -> str | None:
    """The dotted key ("data.image_size") of the target `name.data.image_size`, else None."""
    parts = []
    while isinstance(target, ast.Attribute):
        parts.append(target.attr)
        target = target.value
    if isinstance(target, ast.Name) and target.id == name and parts:
        return ".".join(reversed(parts))
    return None


def get_key(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def set_key(config, key: str, value) -> None:
    *sections, leaf = key.split(".")
    for part in sections:
        config = config[part]
    config[leaf] = value


def test_every_config_file_is_checked():
    assert len(FILES) >= 10 and {"digits.py", "textures.py"} <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_sets_only_what_differs_from_its_parent(path):
    module = importlib.import_module(f"configs.{path.stem}")
    namespace = vars(module)
    first, *rest = get_config_body(path)
    # `c = base_config()` or `c = <other config>.get_config()`: the config this file derives from.
    assert isinstance(first, ast.Assign) and isinstance(first.value, ast.Call), ast.unparse(first)
    name = first.targets[0].id
    config = eval(compile(ast.Expression(first.value), str(path), "eval"), namespace)
    restated = []
    for statement in rest:
        if isinstance(statement, ast.Return):
            continue
        assert isinstance(statement, ast.Assign), f"{path.name}: {ast.unparse(statement)}"
        key = dotted_key(statement.targets[0], name)
        assert key is not None, f"{path.name}: {ast.unparse(statement)}"
        value = eval(compile(ast.Expression(statement.value), str(path), "eval"), namespace)
        before = get_key(config, key)
        # 1 == 1.0 restates a float default; True == 1 is a different setting.
        if value == before and isinstance(value, bool) == isinstance(before, bool):
            restated.append(f"{key} = {value!r}")
        set_key(config, key, value)
    assert not restated, f"{path.name} restates what it starts from: {restated}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_config_is_valid(path):
    config = importlib.import_module(f"configs.{path.stem}").get_config()
    validate_config(config)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
@pytest.mark.parametrize(
    "section,key",
    [("train", "g_lr"), ("train", "d_lr"), ("loss", "adv_weight"), ("score", "tile_scale")],
)
def test_non_finite_numbers_are_refused_by_key(section, key, value):
    config = base_config()
    config[section][key] = value
    with pytest.raises(ConfigError, match=rf"config\.{section}\.{key}=.*expected a finite number"):
        validate_config(config)
