"""`--strategy` names to `tf.distribute` strategies, and which worker writes the run's files.

The model and both optimizers must be created inside `strategy.scope()`; the trainer does that.
Under MultiWorkerMirroredStrategy every worker runs the same program, so only the chief writes
checkpoints, metrics and exports; the others write their (required) backups to private folders.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from mhp_keras.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable describing the "
                'cluster, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}; it is not set.'
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"--strategy={name!r}: expected one of {list(STRATEGIES)}.")


def task_info() -> tuple[str, int]:
    """(task type, index) from TF_CONFIG; ("worker", 0) when there is no cluster."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def writes_run_files(strategy_name: str) -> bool:
    """Whether this process writes checkpoints, metrics and exports: always, except on the
    non-chief workers of a multi-worker run."""
    return is_chief() if strategy_name == "multi_worker" else True


def is_chief() -> bool:
    """The chief is the "chief" task, or worker 0 in a cluster without one."""
    task_type, index = task_info()
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def reduces_logs_across_workers(strategy: tf.distribute.Strategy) -> bool:
    """Whether Keras reduces this strategy's step logs across workers: a MultiWorkerMirrored
    strategy whose cluster has more than one chief or worker task.

    Decided from the public cluster spec; Keras 3 itself asks the private
    `strategy.extended._in_multi_worker_mode()`, and tests/test_distribute.py checks that the
    two agree.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs if job in ("chief", "worker")) > 1


def step_logs(results: dict) -> dict:
    """A train or test step's scalar logs, shaped so that Keras can reduce them on any strategy.

    Across workers Keras 3 reduces each log with `strategy.reduce(MEAN, value, axis=0)`, which
    fails on a scalar; a length-1 leading axis makes that reduction a plain mean over replicas
    (and leaves single-worker runs untouched, whose logs stay scalars).
    """
    if not reduces_logs_across_workers(tf.distribute.get_strategy()):
        return results
    return {name: value[None] for name, value in results.items()}
