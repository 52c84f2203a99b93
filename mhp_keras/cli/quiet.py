"""Quiets TensorFlow's and our own logs for the command lines (imported by `mhp_keras.cli`).

A run prints what the command is for (the epoch lines and the RESULT line of `mhp-train`),
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
parses the flags. So importing `mhp_keras.cli` (which both entry points do before TensorFlow)
calls `quiet_tensorflow(sys.argv)`, which reads --verbosity with absl's own parser and sets it.
One kind of line ignores TF_CPP_MIN_LOG_LEVEL: TensorFlow 2.21's libraries log "oneDNN custom
operations are on" (after absl's "WARNING: All log messages before absl::InitializeLog() ...")
from static initialisers, while they are loaded, before TensorFlow applies its level. For those,
`quiet_tensorflow` also puts `_StartUpFilter` on sys.meta_path: TensorFlow's own import then runs
with file descriptor 2 (where C++ writes) captured, and every captured line is written back except
log lines below the level. A crash while TensorFlow loads would lose its message in that capture:
`-v 0` shows it.

This module imports neither TensorFlow nor Keras (it must run before them).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile

from absl import flags

# The absl verbosity of a run without --verbosity: WARNING, so our own INFO lines stay quiet.
QUIET_VERBOSITY = -1
# TF_CPP_MIN_LOG_LEVEL then: FATAL only (C++ levels: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL).
QUIET_CPP_LEVEL = 3

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


def set_python_log_levels() -> None:
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
    without TensorFlow's start-up log lines below `level`. (Two dup2 calls and a temporary file,
    rather than a capture package such as wurlitzer: no dependency, no reader thread.)"""
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


def quiet_tensorflow(argv: list[str]) -> None:
    """Sets TF_CPP_MIN_LOG_LEVEL from --verbosity and filters TensorFlow's start-up lines."""
    if "tensorflow" in sys.modules:
        return  # loaded before this module (a test, a notebook): its logging is not ours to set
    level = tensorflow_cpp_level(_verbosity_on_command_line(argv))
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(level)
    if level > 0:
        sys.meta_path.insert(0, _StartUpFilter(level))
