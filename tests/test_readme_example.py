"""The "Use it from Python" example of docs/usage.md runs as written, so it cannot go stale."""

import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from readme_helpers import USAGE, markdown_block


@pytest.mark.slow
def test_use_it_from_python_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(markdown_block("Use it from Python", USAGE))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"threshold -?\d+\.\d; \d+ of 64 flagged", result.stdout)
    run = tmp_path / "runs" / "python"
    assert (run / "best.keras").is_file() and (run / "model.keras").is_file()
    assert os.listdir(run / "logs")
    loaded = tf.saved_model.load(str(run / "export" / "conad" / "1"))
    assert {"serving_default", "serving_bytes"} <= set(loaded.signatures)
