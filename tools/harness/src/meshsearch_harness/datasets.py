"""The public evaluation sets (BEIR SciFact, the STS benchmark), read from ../shared/data beside
the repository (never copied into it; MESHSEARCH_SHARED_DATA points elsewhere), and synthetic
vectors shaped like real embeddings."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np

# tools/harness/src/meshsearch_harness/datasets.py -> the repository's parent.
SHARED_DATA = Path(os.environ.get("MESHSEARCH_SHARED_DATA", Path(__file__).resolve().parents[5] / "shared" / "data"))


def _existing(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: tests and benchmarks expect ../shared/data beside the repository")
    return path


def _jsonl(path: Path) -> list[dict]:  # type: ignore[type-arg]
    with _existing(path).open(encoding="utf-8") as handle:
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


def scifact_abstracts(count: int) -> list[tuple[str, str]]:
    """(id, "title text") of the first `count` SciFact abstracts."""
    return [(d["_id"], document_text(d)) for d in scifact_corpus()[:count]]


def sts_pairs(split: str = "dev") -> list[tuple[str, str, float]]:
    """(sentence1, sentence2, gold score 0-5) of the STS benchmark split."""
    with _existing(SHARED_DATA / "stsbenchmark" / f"sts-{split}.csv").open(encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(row[5], row[6], float(row[4])) for row in rows if len(row) >= 7]


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
    unit: np.ndarray = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    return unit
