"""The process-wide runtime of a run: seeds, op determinism and the mixed-precision policy that
`train.mixed_precision` means on this host. Set before any model is built.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from mhp_keras.hardware import cpu_has_native_bfloat16

# train.mixed_precision -> Keras dtype policy.
PRECISION_POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def set_up_runtime(config) -> None:
    """Seeds, op determinism and the mixed-precision policy, before any model is built."""
    keras.utils.set_random_seed(int(config.seed))
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.config.set_dtype_policy(
        PRECISION_POLICIES[resolve_precision(config.train.mixed_precision)]
    )


def auto_precision(gpu_compute_capability: tuple[int, int] | None, cpu_bfloat16: bool) -> str:
    """What `train.mixed_precision=auto` means on a host.

    On a GPU, by its compute capability: bfloat16 from 8.0 (Ampere and later have bfloat16 tensor
    cores and need no loss scaling), float16 with loss scaling from 7.0 (Volta and Turing tensor
    cores), float32 below. On a CPU-only host, bfloat16 where the CPU has native bfloat16 (faster
    training at equal AUROC there), float32 elsewhere (emulated bfloat16 is much slower); the
    measurements are in docs/results.md#mixed-precision.
    """
    if gpu_compute_capability is not None:
        if tuple(gpu_compute_capability) >= (8, 0):
            return "bfloat16"
        return "float16" if tuple(gpu_compute_capability) >= (7, 0) else "none"
    return "bfloat16" if cpu_bfloat16 else "none"


def gpu_compute_capability() -> tuple[int, int] | None:
    """The lowest compute capability among the visible GPUs (None without a GPU)."""
    capabilities = []
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        capabilities.append(tuple(capability) if capability else (0, 0))
    return min(capabilities) if capabilities else None


def resolve_precision(name: str) -> str:
    """The precision `train.mixed_precision=name` means on this host (see `auto_precision`)."""
    if name != "auto":
        return name
    return auto_precision(gpu_compute_capability(), cpu_has_native_bfloat16())
