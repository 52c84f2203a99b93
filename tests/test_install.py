"""The package resolves to exactly one TensorFlow distribution, for the CPU install (`pip install
-e .`) and for the GPU install (`pip install -e ".[gpu]"`): two distributions of the same
`tensorflow` package in one environment overwrite each other's files.

Asks the package index what pip would install (`--dry-run --report`), installing nothing.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TENSORFLOW_DISTRIBUTIONS = {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel"}


def resolved(requirement: str, tmp_path) -> dict[str, str]:
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
    command += ["--report", str(report), requirement]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    offline = ("NewConnectionError", "Network is unreachable", "Temporary failure in name")
    if result.returncode != 0 and any(marker in result.stderr for marker in offline):
        pytest.skip("the package index is unreachable")
    assert result.returncode == 0, result.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in installs}


@pytest.mark.slow
@pytest.mark.parametrize(("extra", "cuda"), [("", False), ("[gpu]", True)])
def test_one_tensorflow_distribution(tmp_path, extra, cuda):
    packages = resolved(f"{ROOT}{extra}", tmp_path)
    tensorflows = sorted(TENSORFLOW_DISTRIBUTIONS & set(packages))
    assert tensorflows == ["tensorflow"], tensorflows
    assert packages["tensorflow"].startswith("2.21.")
    assert any(name.startswith("nvidia-cudnn") for name in packages) == cuda
