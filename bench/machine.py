"""What a benchmark figure was measured on. Speedups do not carry across CPUs (an AMD EPYC with
AVX2 only ran ~3x slower than another machine of the same kind), so every benchmark prints this
beside its figures. The embedder keys its backend choice on the same description."""

from meshsearch_embedder.cpu import cpu_description

__all__ = ["cpu_description"]
