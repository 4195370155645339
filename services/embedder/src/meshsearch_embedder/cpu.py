"""What CPU this process runs on. CPU inference speed depends on the model of CPU and on a few
SIMD features more than on anything else (an AMD EPYC with AVX2 only ran ~3x slower than another
of the same name with AVX-512 VNNI), so the auto backend keys its calibration on them and every
benchmark prints them beside its figures."""

from __future__ import annotations

import math
import os
from functools import cache
from pathlib import Path

# The SIMD features that decide CPU inference speed.
SIMD_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = "unknown", frozenset[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = frozenset(value.split())
    except OSError:
        pass
    return model, flags


def cpu_model() -> str:
    return _cpuinfo()[0]


def simd_flags() -> list[str]:
    """The SIMD_FLAGS this CPU has, in SIMD_FLAGS order."""
    flags = _cpuinfo()[1]
    return [flag for flag in SIMD_FLAGS if flag in flags]


def cpu_description() -> str:
    """'<model>, <n> CPUs, flags: <the SIMD_FLAGS present>'."""
    present = simd_flags() or ["none of " + "/".join(SIMD_FLAGS)]
    return f"{cpu_model()}, {usable_cpus()} CPUs, flags: {' '.join(present)}"


# Where a CPU quota can be set, under the root: cgroup v2's single file, or cgroup v1's pair.
# Containers see their own cgroup there (Kubernetes' CPU limit, `docker run --cpus`).
_CGROUP_V2_CPU_MAX = "sys/fs/cgroup/cpu.max"
_CGROUP_V1_QUOTA = "sys/fs/cgroup/cpu/cpu.cfs_quota_us"
_CGROUP_V1_PERIOD = "sys/fs/cgroup/cpu/cpu.cfs_period_us"


def _cgroup_quota_cpus(root: Path) -> float | None:
    """CPUs' worth of time the cgroup quota allows per period, or None without a quota."""
    try:
        quota, period = (root / _CGROUP_V2_CPU_MAX).read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / _CGROUP_V1_QUOTA).read_text())
        period_us = int((root / _CGROUP_V1_PERIOD).read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = Path("/")) -> int:
    """How many CPUs this process may really run on: the CPUs of its affinity mask (taskset,
    a cpuset), capped by its cgroup's quota rounded up (a Kubernetes CPU limit).

    Why not os.cpu_count(): it counts the machine's CPUs. An embedder limited to 2 CPUs on a
    64-core node would start 64 inference threads that the quota throttles in turn, and one
    pinned to a core would run two threads that wait for each other on it."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota_cpus(root)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def inference_threads(configured: int) -> int:
    """The intra-op thread count a backend should run: the configured one, else usable_cpus()."""
    return configured or usable_cpus()
