"""Config-file flags (`--config=configs/x.py`, `--config.section.key=value`) whose mistakes are
`ConfigError`s with a hint (a close file or key name, the keys of a section, the type a key takes)
instead of ml_collections' tracebacks. `mhp_keras.cli.app.parse_flags` turns them into `error:`.

Hand-written rather than ml_collections' own `DEFINE_config_file` parser: that one defers a
missing file to the first use of the config and lets errors in the file escape as tracebacks.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.util
import os
import re
import traceback

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from mhp_keras.cli.exits import sentences
from mhp_keras.errors import ConfigError

# Flags defined through `define_config_file` belong to the calling entry point: --helpshort lists
# them with its own flags.
flags.disclaim_key_flags()
# difflib similarity from which a name is offered as "did you mean": close enough for typos and
# singular/plural slips, without offering unrelated keys that merely share a section name.
_CLOSE = 0.75
# Config flags defined by `define_config_file`, with their default files. The defaults are only
# applied inside `parse_flags`: ml_collections parses a default (and applies the --config.*
# overrides) as soon as the flag is defined, i.e. at import time, where a misspelt key would
# escape as a traceback before `app.run` starts.
CONFIG_DEFAULTS: dict[str, str] = {}
# The command line that the config flags read their --NAME.key overrides from (ml_collections'
# `sys_argv`). Empty until `parse_flags` fills it in, so that defining a config flag at import time
# reads no --flagfile: a missing one would escape as a traceback there too.
ARGV: list[str] = []


def define_config_file(name: str, default: str, help_string: str) -> flags.FlagHolder:
    """`config_flags.DEFINE_config_file`, with config-file and override mistakes as `UserError`s.

    The file must define `get_config()` returning an `ml_collections.ConfigDict`; the config is
    locked, so `--NAME.key=value` can only set keys that exist.
    """
    holder = config_flags.DEFINE_config_file(name, None, help_string, sys_argv=ARGV)
    # ml_collections' parser defers a missing file to the first use of the config and lets
    # errors in the file escape with tracebacks; this one reports them when the flag is parsed.
    flags.FLAGS[name].parser = _ConfigFileParser(name, default)
    CONFIG_DEFAULTS[name] = default
    return holder


class _ConfigFileParser(flags.ArgumentParser):
    """Loads `path[:argument]`: the ConfigDict from the file's `get_config([argument])`, locked.

    It also checks every `--NAME.key` override on the command line against the loaded config, as
    ml_collections would otherwise fail on an unknown key with an AttributeError traceback.
    """

    def __init__(self, name: str, default: str):
        self.name = name
        self.default = default

    def flag_type(self):
        return "config object"

    def parse(self, argument):
        path, *config_args = str(argument).split(":", 1)
        flag = f"--{self.name}={argument}"
        if not os.path.isfile(path):
            what = "is a folder" if os.path.isdir(path) else "does not exist"
            raise ConfigError(
                sentences(
                    f"{flag} {what}; expected a Python config file defining get_config()",
                    _config_file_hint(path, self.default),
                )
            )
        module = _load_config_module(flag, path, f"{self.name}_config")
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            raise ConfigError(
                f"{flag} defines no get_config() function; expected one that returns an "
                "ml_collections.ConfigDict (see configs/digits.py)."
            )
        try:
            config = get_config(*config_args)
        except Exception as e:  # noqa: BLE001 - the config file is the user's code
            raise ConfigError(
                f"{flag}: get_config() failed{_where(e, path)}: {_describe(e)}."
            ) from None
        if not isinstance(config, ml_collections.ConfigDict):
            raise ConfigError(
                f"{flag}: get_config() returned {type(config).__name__}; expected an "
                "ml_collections.ConfigDict (see configs/digits.py)."
            )
        config.lock()
        _check_override_keys(self.name, config, argument)
        return config


def _load_config_module(flag: str, path: str, module_name: str):
    loader = importlib.machinery.SourceFileLoader(module_name, path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(module_name, loader))
    try:
        loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(
            f"{flag} is not valid Python: {e.msg} at line {e.lineno}"
            + (f": {e.text.strip()}" if e.text and e.text.strip() else "")
        ) from None
    except Exception as e:  # noqa: BLE001 - the config file is the user's code
        raise ConfigError(f"{flag} could not be loaded{_where(e, path)}: {_describe(e)}.") from None
    return module


def _describe(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _where(error: Exception, path: str) -> str:
    """' at line N' for the last line of the config file in the error's traceback."""
    target = os.path.abspath(path)
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if os.path.abspath(frame.filename) == target
    ]
    return f" at line {lines[-1]}" if lines else ""


def _config_file_hint(path: str, default: str) -> str:
    """Close file names in the folder of `path`, or else in the folder of the default config."""
    for folder in (os.path.dirname(path) or ".", os.path.dirname(default)):
        if not os.path.isdir(folder):
            continue
        names = sorted(
            n for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("__")
        )
        close = difflib.get_close_matches(os.path.basename(path), names, n=3, cutoff=_CLOSE)
        if close:
            return "Did you mean " + " or ".join(os.path.join(folder, n) for n in close) + "?"
        if folder == os.path.dirname(default) and names:
            return f"The configs in {folder} are: {', '.join(names)}"
    return ""


def _leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every key of `config` that holds a value, nested ones as `section.key`."""
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys += _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def _override_paths(name: str) -> list[str]:
    """The config keys set as `--NAME.key[=value]` on the command line, as ml_collections finds
    them: with --flagfile contents expanded."""
    argv = flags.FLAGS.read_flags_from_files(ARGV, force_gnu=False)
    pattern = re.compile(rf"-{{1,2}}(no)?{re.escape(name)}\.")
    return [
        arg.split("=", 1)[0].split(".", 1)[1] for arg in argv[1:] if pattern.match(arg) is not None
    ]


def _has_key(config: ml_collections.ConfigDict, path: str) -> bool:
    try:
        config_path.get_value(path, config)
    except (AttributeError, KeyError, IndexError, ValueError, TypeError):
        return False
    return True


def _check_override_keys(name: str, config: ml_collections.ConfigDict, argument: str) -> None:
    for path in _override_paths(name):
        if _has_key(config, path):
            continue
        keys = _leaf_keys(config)
        close = difflib.get_close_matches(path, keys, n=3, cutoff=_CLOSE)
        section = path.rpartition(".")[0]
        in_section = [k.rpartition(".")[2] for k in keys if k.rpartition(".")[0] == section]
        if close:
            hint = "did you mean " + " or ".join(f"--{name}.{k}" for k in close) + "?"
        elif section and in_section:
            hint = f"the keys of {section} are: {', '.join(in_section)}."
        else:
            top = sorted({k.split(".", 1)[0] for k in keys})
            hint = f"the top-level keys and sections are: {', '.join(top)}."
        raise ConfigError(f"--{name}.{path}: the config ({argument}) has no key {path}; {hint}")


def config_key_hint(flagname: str) -> str:
    """For an unknown --flag that is the last part of a config key: the --config.key to use."""
    for name in CONFIG_DEFAULTS:
        config = flags.FLAGS[name].value
        if not isinstance(config, ml_collections.ConfigDict):
            continue
        keys = _leaf_keys(config)
        last = {key: key.rpartition(".")[2] for key in keys}
        close = difflib.get_close_matches(flagname, sorted(set(last.values())), n=3, cutoff=_CLOSE)
        matches = [key for word in close for key in keys if last[key] == word]
        if matches:
            suggestions = " or ".join(f"--{name}.{k}" for k in matches[:3])
            return f"Config keys are set as --{name}.<key>: did you mean {suggestions}?"
    return ""


def config_type_hint(message: str) -> str:
    """For a bad --config.key=value: the type the key holds and its current value."""
    match = re.match(r"flag --([^=\s]+)=", message)
    if match is None or match.group(1).split(".", 1)[0] not in CONFIG_DEFAULTS:
        return ""
    name, path = match.group(1).split(".", 1)
    config = flags.FLAGS[name].value
    try:
        value = config_path.get_value(path, config)
    except (AttributeError, KeyError, IndexError, ValueError, TypeError):
        return ""
    return f"; config key {path} takes a value of type {type(value).__name__}, like {value!r}"
