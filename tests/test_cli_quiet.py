"""A normal command-line run prints its own lines only: no TensorFlow start-up, optimizer or
SavedModel logs, and none of our INFO lines; `--verbosity` brings them back (cli/quiet.py).

The runs use cli_helpers' environment, which sets TF_CPP_MIN_LOG_LEVEL=2: the command line
decides TensorFlow's level, whatever the environment says.
"""

import re
import sys

import pytest
from cli_helpers import run, tiny_flags, train_main_command

from mhp_keras.cli import _without_start_up_logs, tensorflow_cpp_level

# What TensorFlow's logs look like: absl's C++ and Python log prefixes ("I0000 00:00:17...",
# "W1129 14:35:05...") and the lines seen on stderr of a run before mhp_keras.cli quieted them.
TF_LOG = re.compile(
    r"^[IWE]\d{4} |WARNING: All log messages before absl|oneDNN custom operations"
    r"|Sharding callback",
    re.M,
)
# Captured from a run on TensorFlow 2.21: what its libraries print while they load.
START_UP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1795962884.508597    1222 port.cc:153] oneDNN custom operations are on.\n"
    "W0000 00:00:1795962884.600000    1222 some_file.cc:7] a warning\n"
    "a line of our own\n"
)


def train(tmp_path, *flags):
    command = train_main_command(
        *tiny_flags(epochs=1, max_train=32), f"--workdir={tmp_path / 'run'}", *flags
    )
    result = run(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^RESULT image_auroc=", result.stdout, re.M), result.stdout
    return result.stdout + result.stderr


@pytest.mark.slow
def test_a_normal_run_prints_no_tensorflow_logs(tmp_path):
    output = train(tmp_path)
    assert not TF_LOG.search(output), output[-3000:]
    assert output.strip().splitlines()[-1].startswith("RESULT ")  # and nothing else here


@pytest.mark.slow
def test_verbosity_brings_tensorflow_logs_back(tmp_path):
    output = train(tmp_path, "--verbosity=0")
    assert re.search(r"^I\d{4} .*Sharding callback", output, re.M), output[-3000:]


def test_our_warnings_stay_and_info_waits_for_verbosity():
    script = (
        "from absl import logging\n"
        "from mhp_keras.cli import run_app\n"
        "def main(argv):\n"
        "    logging.info('our info')\n"
        "    logging.warning('our warning')\n"
        "run_app(main)\n"
    )
    quiet = run([sys.executable, "-c", script])
    assert quiet.returncode == 0, quiet.stderr
    assert "our warning" in quiet.stderr and "our info" not in quiet.stderr
    verbose = run([sys.executable, "-c", script, "-v", "0"])
    assert "our warning" in verbose.stderr and "our info" in verbose.stderr


def test_start_up_lines_below_the_level_are_dropped():
    assert _without_start_up_logs(START_UP, 3) == "a line of our own\n"
    assert _without_start_up_logs(START_UP, 1).splitlines() == START_UP.splitlines()[2:]
    assert _without_start_up_logs(START_UP, 0) == START_UP


def test_cpp_level_follows_verbosity():
    assert [tensorflow_cpp_level(v) for v in (None, 1, 0, -1, -2, -3, -5)] == [3, 0, 0, 1, 2, 3, 3]
