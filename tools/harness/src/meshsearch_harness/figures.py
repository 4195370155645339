"""What every benchmark prints beside a figure: the machine it was measured on, and its
percentiles. Speedups do not carry across CPUs (an AMD EPYC with AVX2 only ran ~3x slower than
another machine of the same kind); the embedder keys its backend choice on the same description."""

from __future__ import annotations

from meshsearch_embedder.cpu import cpu_description

__all__ = ["cpu_description", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0-100) of `values`."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
