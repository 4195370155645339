"""Real evaluation data for the benchmarks, read from ../shared/data (never copied here)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np

SHARED_DATA = Path(os.environ.get("MESHSEARCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def scifact_corpus() -> list[dict]:  # type: ignore[type-arg]
    """5,183 abstracts: {_id, title, text}."""
    return _jsonl(SHARED_DATA / "scifact" / "corpus.jsonl")


def scifact_queries() -> list[dict]:  # type: ignore[type-arg]
    """1,109 claims: {_id, text}."""
    return _jsonl(SHARED_DATA / "scifact" / "queries.jsonl")


def document_text(document: dict) -> str:  # type: ignore[type-arg]
    """How MTEB encodes a BEIR document."""
    return f"{document.get('title', '')} {document['text']}".strip()


def query_passage_mix(queries: int, passages: int, seed: int = 7) -> list[str]:
    """Short claims and full abstracts from SciFact, shuffled with a fixed seed."""
    rng = random.Random(seed)
    texts = [q["text"] for q in rng.sample(scifact_queries(), queries)]
    texts += [document_text(d) for d in rng.sample(scifact_corpus(), passages)]
    rng.shuffle(texts)
    return texts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def embedding_like_vectors(count: int, dimension: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors with the structure of real text embeddings: clusters in a low-dimensional
    (64) latent space, projected to `dimension` with a little isotropic noise. Isotropic
    random vectors are far harder for any ANN index than real embeddings, and say little."""
    rng = np.random.default_rng(seed)
    latent = 64
    projection = rng.standard_normal((latent, dimension)).astype(np.float32) / np.sqrt(latent)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32)
    points = centers[rng.integers(clusters, size=count)] + 0.5 * rng.standard_normal((count, latent)).astype(np.float32)
    vectors = points @ projection + 0.02 * rng.standard_normal((count, dimension)).astype(np.float32)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
