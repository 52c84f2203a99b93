"""Distributed training: MirroredStrategy on two logical CPUs matches one device, and
MultiWorkerMirroredStrategy trains with two worker processes on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import pytest
from cli_helpers import ENV, ROOT, tiny_flags, train_main_command

from mhp_keras import distribute
from mhp_keras.errors import ConfigError

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("adv_weight", ["0", "0.1"])
def test_mirrored_matches_single_device(adv_weight):
    result = subprocess.run(
        [sys.executable, os.path.join(HERE, "mirrored_check.py"), adv_weight],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # Four Adam steps move the weights by ~4e-3; replicas must agree to float rounding. A loss
    # averaged per replica instead of over the global batch would double the gradients.
    assert report["weights_moved"] > 1e-3
    assert report["weight_diff"] < 1e-5
    for name, diff in report["loss_diff"].items():
        assert diff <= 1e-4 * max(1.0, abs(report["loss"])), name


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multi_worker_training_on_localhost(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workdir = tmp_path / "run"
    args = train_main_command(
        "--strategy=multi_worker",
        f"--workdir={workdir}",
        "--mode=train",
        "--config.data.batch_size=16",
        *tiny_flags(max_train=32),
    )
    workers = []
    try:
        for index in range(2):
            env = dict(
                ENV,
                TF_CONFIG=json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            )
            workers.append(
                subprocess.Popen(
                    args,
                    env=env,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        outputs = [w.communicate(timeout=420) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    assert (workdir / "model.keras").exists()  # written by the chief only
    assert (workdir / "backup_workers" / "worker_1").exists()
    assert "RESULT exported to" in outputs[0][0]


def test_strategy_names_and_chief():
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        os.environ.pop("TF_CONFIG", None)
        distribute.make_strategy("multi_worker")
    with pytest.raises(ConfigError, match="expected one of"):
        distribute.make_strategy("tpu")
    assert distribute.is_chief()
