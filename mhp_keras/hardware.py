"""What the host CPU can do, read once from /proc/cpuinfo.

Precision defaults (`train.mixed_precision=auto`) and the speed benchmark both ask whether the CPU
has native bfloat16; one reader keeps their answers the same.
"""

from __future__ import annotations

import functools

CPUINFO = "/proc/cpuinfo"
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The feature flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        with open(CPUINFO, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        with open(CPUINFO, encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_has_native_bfloat16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BFLOAT16_FLAGS)
