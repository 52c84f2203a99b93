"""`run_app`, absl's `app.run` with every user mistake (a bad flag, config file, config key or
folder, or a `UserError` raised by `main`) printed as one `error: ...` paragraph and exit status 2.

absl and ml_collections raise such mistakes as exceptions with tracebacks (or as absl's
`FATAL Flags parsing error`, status 1). `run_app` gives `app.run` a flags parser that turns them
into one paragraph, and turns a `UserError` raised by `main` into the same.
"""

from __future__ import annotations

import sys

from absl import app, flags

from mhp_keras.cli import config_files
from mhp_keras.cli.exits import fail, interrupted, sentences
from mhp_keras.cli.quiet import set_python_log_levels
from mhp_keras.errors import UserError
from mhp_keras.io_utils import DISK_FULL_ERRNOS

_FLAGS_HINT = "See --help for the flags."


def run_app(main) -> None:
    """`app.run(main)` with every user mistake, in the flags or raised by `main`, as `fail`."""

    def guarded_main(argv):
        try:
            return main(argv)
        except UserError as error:
            fail(str(error))
        except KeyboardInterrupt:
            interrupted()
        except OSError as error:
            if error.errno not in DISK_FULL_ERRNOS:
                raise
            where = f" {error.filename}" if error.filename else ""
            fail(
                f"could not write{where}: {error.strerror} (the device is full or read-only). "
                "Files are written whole or not at all, so what was written before is intact: "
                "free some space and run the same command again."
            )

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
    config_files.ARGV[:] = argv
    try:
        for name, default in config_files.CONFIG_DEFAULTS.items():
            flags.FLAGS.set_default(name, default)
        remaining = flags.FLAGS(argv)
    except UserError as error:
        fail(str(error))
    except flags.UnrecognizedFlagError as error:
        hint = config_files.config_key_hint(error.flagname)
        fail(sentences(str(error), hint, _FLAGS_HINT))
    except flags.Error as error:
        message = str(error).removeprefix("ERROR:: ")  # absl's prefix for an unreadable flagfile
        fail(sentences(message + config_files.config_type_hint(message), _FLAGS_HINT))
    if len(remaining) > 1:
        unexpected = f"unexpected arguments {remaining[1:]}: every option is a --flag=value"
        fail(sentences(unexpected, _FLAGS_HINT))
    set_python_log_levels()
    return remaining
