"""What a benchmark figure was measured on. Speedups do not carry across CPUs (an AMD EPYC with
AVX2 only ran ~3x slower than another machine of the same kind), so every benchmark prints this
beside its figures."""

from __future__ import annotations

import os
from pathlib import Path

# The SIMD features that decide CPU inference speed.
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")


def cpu_description() -> str:
    """'<model>, <n> CPUs, flags: <the CPU_FLAGS present>' from /proc/cpuinfo."""
    model, flags = "unknown", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    present = [flag for flag in CPU_FLAGS if flag in flags] or ["none of " + "/".join(CPU_FLAGS)]
    return f"{model}, {os.cpu_count()} CPUs, flags: {' '.join(present)}"
