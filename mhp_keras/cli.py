"""What `train_main.py` (`mhp-train`) and `mhp-predict` share so that no user mistake ends in a
traceback: every bad flag, config file, config key or folder is printed as one paragraph
`error: ...` on stderr and the process exits with status 2.

    _CONFIG = define_config_file("config", "configs/digits.py", "Experiment config file.")
    ...
    run_app(main)  # instead of app.run(main)

absl and ml_collections raise such mistakes as exceptions with tracebacks (or as absl's
`FATAL Flags parsing error`, status 1). `run_app` gives `app.run` a flags parser that turns them
into one paragraph, and turns a `UserError` raised by `main` into the same.

This module imports neither TensorFlow nor Keras, so flag mistakes are reported in well under a
second when the entry point also leaves those imports until after flag parsing.

Logs. A run prints what the command is for (the epoch lines and the RESULT line of `mhp-train`),
the warnings mhp_keras logs on purpose (skipped files, divergence) and `error:` paragraphs; not
TensorFlow's start-up, optimizer and SavedModel chatter, nor our own INFO lines. absl's own
`--verbosity` (`-v`) brings them back, rather than a flag of ours: it already sets the level of
every Python logger, and one flag for all logs is what an absl user expects.

* No `--verbosity`: Python logging at WARNING (absl would pick INFO), TensorFlow's Python logger
  at ERROR, its C++ logs at FATAL only (TF_CPP_MIN_LOG_LEVEL=3). Its C++ ERROR lines are
  grappler's "remapper failed"-style notes; a real failure reaches us as a Python exception.
* `--verbosity=N`, e.g. `-v 0` or `-v 1`: absl's meaning for every Python logger, TensorFlow's
  included (1 DEBUG, 0 INFO, -1 WARNING, ...), and TensorFlow's C++ logs from the same level
  (TF_CPP_MIN_LOG_LEVEL 0 for N >= 0, 1 for -1, 2 for -2, 3 below): the first thing to try when
  something looks wrong, e.g. a GPU that is not used.

The command line decides TF_CPP_MIN_LOG_LEVEL, overriding the environment, and it must be set
before TensorFlow is imported; `mhp-predict` imports TensorFlow at start-up, before `run_app`
parses the flags. So importing this module (which both entry points do before TensorFlow) reads
--verbosity from sys.argv with absl's own parser and sets it. One kind of line ignores
TF_CPP_MIN_LOG_LEVEL: TensorFlow 2.21's libraries log "oneDNN custom operations are on" (after
absl's "WARNING: All log messages before absl::InitializeLog() ...") from static initialisers,
while they are loaded, before TensorFlow applies its level. For those, importing this module also
puts `_StartUpFilter` on sys.meta_path: TensorFlow's own import then runs with file descriptor 2
(where C++ writes) captured, and every captured line is written back except log lines below the
level. A crash while TensorFlow loads would lose its message in that capture: `-v 0` shows it.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import re
import sys
import tempfile
import traceback
from typing import NoReturn

import ml_collections
from absl import app, flags
from ml_collections import config_flags
from ml_collections.config_flags import config_path

from mhp_keras.errors import ConfigError, UserError

EXIT_USER_ERROR = 2
EXIT_PARTIAL = 3  # mhp-predict: scores.csv written, but some files could not be scored
# Flags defined through `define_config_file` belong to the calling entry point: --helpshort lists
# them with its own flags.
flags.disclaim_key_flags()
_FLAGS_HINT = "See --help for the flags."
# difflib similarity from which a name is offered as "did you mean": close enough for typos and
# singular/plural slips, without offering unrelated keys that merely share a section name.
_CLOSE = 0.75
# Config flags defined by `define_config_file`, with their default files. The defaults are only
# applied inside `parse_flags`: ml_collections parses a default (and applies the --config.*
# overrides) as soon as the flag is defined, i.e. at import time, where a misspelt key would
# escape as a traceback before `app.run` starts.
_CONFIG_DEFAULTS: dict[str, str] = {}
# The command line that the config flags read their --NAME.key overrides from (ml_collections'
# `sys_argv`). Empty until `parse_flags` fills it in, so that defining a config flag at import time
# reads no --flagfile: a missing one would escape as a traceback there too.
_ARGV: list[str] = []
# The absl verbosity of a run without --verbosity: WARNING, so our own INFO lines stay quiet.
QUIET_VERBOSITY = -1
# TF_CPP_MIN_LOG_LEVEL then: FATAL only (C++ levels: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL).
QUIET_CPP_LEVEL = 3


def fail(message: str) -> NoReturn:
    """Prints `message` as one paragraph `error: ...` on stderr and exits with status 2."""
    paragraph = re.sub(r"\s*\n\s*", " ", str(message).strip())
    print(f"error: {paragraph}", file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)


def _sentences(*parts: str) -> str:
    """Joins message parts into sentences, each ending in a full stop unless it has a mark."""
    return " ".join(p if p.endswith((".", "?", "!")) else p + "." for p in parts if p)


def run_app(main) -> None:
    """`app.run(main)` with every user mistake, in the flags or raised by `main`, as `fail`."""

    def guarded_main(argv):
        try:
            return main(argv)
        except UserError as error:
            fail(str(error))

    _help_for_console_script(main.__module__)
    app.run(guarded_main, flags_parser=parse_flags)


def _help_for_console_script(module_name: str) -> None:
    """Lets --help of a console script describe the module that defines `main`.

    absl's --help shows the docstring of `__main__` and the flags of the module named by
    sys.argv[0]; for `mhp-train` or `mhp-predict` those are pip's generated wrapper, which has
    neither, so --help would print no flags at all.
    """
    if module_name == "__main__":
        return
    main_module = sys.modules["__main__"]
    if not main_module.__doc__:
        main_module.__doc__ = sys.modules[module_name].__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flags parsing, with each mistake reported by `fail` instead of a traceback.

    Positional arguments are a mistake too: every option of these commands is a --flag.
    """
    _ARGV[:] = argv
    try:
        for name, default in _CONFIG_DEFAULTS.items():
            flags.FLAGS.set_default(name, default)
        remaining = flags.FLAGS(argv)
    except UserError as error:
        fail(str(error))
    except flags.UnrecognizedFlagError as error:
        fail(_sentences(str(error), _config_key_hint(error.flagname), _FLAGS_HINT))
    except flags.Error as error:
        message = str(error).removeprefix("ERROR:: ")  # absl's prefix for an unreadable flagfile
        fail(_sentences(message + _config_type_hint(message), _FLAGS_HINT))
    if len(remaining) > 1:
        unexpected = f"unexpected arguments {remaining[1:]}: every option is a --flag=value"
        fail(_sentences(unexpected, _FLAGS_HINT))
    _set_python_log_levels()
    return remaining


def define_config_file(name: str, default: str, help_string: str) -> flags.FlagHolder:
    """`config_flags.DEFINE_config_file`, with config-file and override mistakes as `UserError`s.

    The file must define `get_config()` returning an `ml_collections.ConfigDict`; the config is
    locked, so `--NAME.key=value` can only set keys that exist.
    """
    holder = config_flags.DEFINE_config_file(name, None, help_string, sys_argv=_ARGV)
    # ml_collections' parser defers a missing file to the first use of the config and lets
    # errors in the file escape with tracebacks; this one reports them when the flag is parsed.
    flags.FLAGS[name].parser = _ConfigFileParser(name, default)
    _CONFIG_DEFAULTS[name] = default
    return holder


def ensure_output_dir(flag: str, path: str) -> None:
    """Creates folder `path` (with its parents) or raises a `UserError` saying why it cannot."""
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{flag}={path} is not writable; expected a folder you can write to.")
        return
    if os.path.exists(path):
        raise UserError(f"{flag}={path} is a file; expected a folder (or a new path).")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"{flag}={path}: the folder cannot be created ({e.strerror}); expected a folder you "
            "can write to, or a new path inside one."
        ) from None


# -- config files ---------------------------------------------------------------------------------


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
                _sentences(
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
    argv = flags.FLAGS.read_flags_from_files(_ARGV, force_gnu=False)
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


def _config_key_hint(flagname: str) -> str:
    """For an unknown --flag that is the last part of a config key: the --config.key to use."""
    for name in _CONFIG_DEFAULTS:
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


def _config_type_hint(message: str) -> str:
    """For a bad --config.key=value: the type the key holds and its current value."""
    match = re.match(r"flag --([^=\s]+)=", message)
    if match is None or match.group(1).split(".", 1)[0] not in _CONFIG_DEFAULTS:
        return ""
    name, path = match.group(1).split(".", 1)
    config = flags.FLAGS[name].value
    try:
        value = config_path.get_value(path, config)
    except (AttributeError, KeyError, IndexError, ValueError, TypeError):
        return ""
    return f"; config key {path} takes a value of type {type(value).__name__}, like {value!r}"


# -- TensorFlow's logs (see the module docstring) -------------------------------------------------

# A line of absl's C++ log format, e.g. "I0000 00:00:1795962884.508597    1222 port.cc:153] ..."
# (before absl::InitializeLog the date is 0000 and the seconds count from 1970); group 1 is the
# severity.
_CPP_LOG_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] ")
_CPP_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_ABSL_PRE_INIT = "WARNING: All log messages before absl::InitializeLog() is called"


def tensorflow_cpp_level(verbosity: int | None) -> int:
    """TF_CPP_MIN_LOG_LEVEL for absl verbosity `verbosity` (None: no --verbosity given)."""
    if verbosity is None:
        return QUIET_CPP_LEVEL
    return min(3, max(0, -verbosity))


def _verbosity_on_command_line(argv: list[str]) -> int | None:
    """--verbosity (-v) as absl will parse it from `argv`, flagfiles included, before the other
    flags are defined; None if absent or unreadable (the real parse then reports the mistake)."""
    scan = flags.FlagValues()
    flags.DEFINE_integer("verbosity", None, "", short_name="v", flag_values=scan)
    try:
        scan(list(argv), known_only=True)
    except flags.Error:
        return None
    return scan.verbosity


def _set_python_log_levels() -> None:
    """After parsing: our default verbosity, and TensorFlow's Python logger to match."""
    given = flags.FLAGS["verbosity"].present
    if not given:
        flags.FLAGS.verbosity = QUIET_VERBOSITY  # also stops app.run raising it to INFO
    # Explicitly given, it governs TensorFlow's logger through the root logger, as any other.
    logging.getLogger("tensorflow").setLevel(logging.NOTSET if given else logging.ERROR)


def _without_start_up_logs(text: str, level: int) -> str:
    """`text` without the C++ log lines below `level` and absl's notice that precedes them."""
    kept = []
    for line in text.splitlines(keepends=True):
        match = _CPP_LOG_LINE.match(line)
        if match and _CPP_SEVERITY[match.group(1)] < level:
            continue
        if line.startswith(_ABSL_PRE_INIT) and level > 0:
            continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _start_up_logs_filtered(level: int):
    """Captures file descriptor 2 for the block; then writes what it caught back to stderr,
    without TensorFlow's start-up log lines below `level`."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (AttributeError, OSError):  # no stderr at all (sys.stderr None, fd 2 closed)
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            sys.stderr.write(_without_start_up_logs(text, level))
            sys.stderr.flush()


class _StartUpFilter(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as usual, but runs its import inside `_start_up_logs_filtered`.

    Wherever the import happens (the top of mhp-predict, or deep inside train_main's `main`), and
    only once: it removes itself, and hands the module its real loader before running it.
    """

    def __init__(self, level: int):
        self.level = level

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader, self.level)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    """TensorFlow's own loader, run inside `_start_up_logs_filtered`."""

    def __init__(self, loader: importlib.abc.Loader, level: int):
        self.loader = loader
        self.level = level

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__spec__.loader = module.__loader__ = self.loader
        with _start_up_logs_filtered(self.level):
            self.loader.exec_module(module)


def _quiet_tensorflow(argv: list[str]) -> None:
    """Sets TF_CPP_MIN_LOG_LEVEL from --verbosity and filters TensorFlow's start-up lines."""
    if "tensorflow" in sys.modules:
        return  # loaded before this module (a test, a notebook): its logging is not ours to set
    level = tensorflow_cpp_level(_verbosity_on_command_line(argv))
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(level)
    if level > 0:
        sys.meta_path.insert(0, _StartUpFilter(level))


_quiet_tensorflow(sys.argv)
