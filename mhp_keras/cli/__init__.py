"""What `train_main.py` (`mhp-train`) and `mhp-predict` share so that no user mistake ends in a
traceback: every bad flag, config file, config key or folder is printed as one paragraph
`error: ...` on stderr and the process exits with status 2.

    _CONFIG = define_config_file("config", "configs/digits.py", "Experiment config file.")
    ...
    run_app(main)  # instead of app.run(main)

The parts: `app` (`run_app` and its flags parser), `config_files` (config-file flags and their
hints), `exits` (exit statuses, `fail`, `ensure_output_dir`) and `quiet` (TensorFlow's and our
logs; `--verbosity` brings them back).

Importing this package quiets TensorFlow's logs (`quiet.quiet_tensorflow`, from --verbosity on
sys.argv), which must happen before TensorFlow is imported: both entry points import it first.
The package imports neither TensorFlow nor Keras, so flag mistakes are reported in well under a
second when the entry point also leaves those imports until after flag parsing.
"""

from __future__ import annotations

import sys

from mhp_keras.cli.app import parse_flags, run_app
from mhp_keras.cli.config_files import define_config_file
from mhp_keras.cli.exits import EXIT_PARTIAL, EXIT_USER_ERROR, ensure_output_dir, fail
from mhp_keras.cli.quiet import (
    QUIET_CPP_LEVEL,
    QUIET_VERBOSITY,
    _without_start_up_logs,
    quiet_tensorflow,
    tensorflow_cpp_level,
)

__all__ = [
    "EXIT_PARTIAL",
    "EXIT_USER_ERROR",
    "QUIET_CPP_LEVEL",
    "QUIET_VERBOSITY",
    "_without_start_up_logs",
    "define_config_file",
    "ensure_output_dir",
    "fail",
    "parse_flags",
    "quiet_tensorflow",
    "run_app",
    "tensorflow_cpp_level",
]

quiet_tensorflow(sys.argv)
