"""Ground truth for approximate nearest-neighbour benchmarks: queries that land near stored
points, as real queries land near real documents, and their exact top 10 by brute force, which
an HNSW search's recall@10 is measured against."""

from __future__ import annotations

import numpy as np


def queries_near(data: np.ndarray, count: int, seed: int = 2) -> np.ndarray:
    """`count` unit vectors, each a stored point with a little noise (not the point itself)."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, data.shape[1])).astype(np.float32)
    queries = data[rng.integers(len(data), size=count)] + 0.05 * noise
    unit: np.ndarray = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    return unit


def exact_top10(data: np.ndarray, queries: np.ndarray, mask: np.ndarray | None = None) -> list[set[int]]:
    """Row numbers of each query's 10 most similar unit vectors (cosine), among `mask` if given."""
    scores = queries @ data.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    return [set(np.argpartition(-row, 10)[:10].tolist()) for row in scores]


def recall(found: list[list[int]], truth: list[set[int]]) -> float:
    """Mean recall@10 of `found` (row numbers per query) against `truth`."""
    return float(np.mean([len(set(f) & t) / 10 for f, t in zip(found, truth, strict=True)]))
