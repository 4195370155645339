"""What CPU this process runs on. CPU inference speed depends on the model of CPU and on a few
SIMD features more than on anything else (an AMD EPYC with AVX2 only ran ~3x slower than another
of the same name with AVX-512 VNNI), so the auto backend keys its calibration on them and every
benchmark prints them beside its figures."""

from __future__ import annotations

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
    return f"{cpu_model()}, {os.cpu_count()} CPUs, flags: {' '.join(present)}"
