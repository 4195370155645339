"""Plain data types of the search core (no gRPC, no SQL)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

# Shared by every service (one metric mapping, one model identity); re-exported.
from meshsearch_common.vectors import Metric as Metric
from meshsearch_common.vectors import ModelIdentity as ModelIdentity


class Storage(enum.Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"

    @property
    def column_type(self) -> str:
        """pgvector's column type for this storage."""
        return "halfvec" if self is Storage.FLOAT16 else "vector"


# pgvector's own defaults, used when a collection does not set them.
HNSW_DEFAULT_M = 16
HNSW_DEFAULT_EF_CONSTRUCTION = 64

POINTS_TABLE_PREFIX = "meshsearch_points_"
HNSW_INDEX_SUFFIX = "_hnsw"


def points_table(collection_id: int) -> str:
    """The table holding a collection's points; every statement names it through this."""
    return f"{POINTS_TABLE_PREFIX}{collection_id}"


def hnsw_index_name(collection_id: int) -> str:
    return f"{points_table(collection_id)}{HNSW_INDEX_SUFFIX}"


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    dimension: int
    metric: Metric = Metric.COSINE
    storage: Storage = Storage.FLOAT32
    hnsw_m: int = HNSW_DEFAULT_M
    hnsw_ef_construction: int = HNSW_DEFAULT_EF_CONSTRUCTION
    model: ModelIdentity = field(default_factory=ModelIdentity)
    chunk_tokens: int = 0  # the writer's chunking, recorded for it (see search.proto)
    chunk_overlap_tokens: int = 0
    chunk_truncate: bool = False
    mixed_numerics: bool = False  # accept writes from other numerics of the model (see search.proto)
    shards: int = 0  # shard servers the points are spread over (0: this service's own database)


@dataclass(frozen=True)
class Collection:
    id: int
    spec: CollectionSpec
    create_time: datetime
    point_count: int = 0
    index_ready: bool = True
    index_deferred: bool = False  # a loading writer holds off the index (see index_keeper)

    @property
    def table(self) -> str:
        return points_table(self.id)

    @property
    def hnsw_index(self) -> str:
        return hnsw_index_name(self.id)

    @property
    def sharded(self) -> bool:
        """Its points live on shard servers, not in this service's own database (see `shards`)."""
        return self.spec.shards > 1


@dataclass(frozen=True)
class Chunk:
    """One embedded piece of a document: its vector and its characters [start, end) in the text."""

    vector: npt.NDArray[np.float32]
    start: int
    end: int


@dataclass(frozen=True)
class Span:
    """Which chunk of a document matched, and where it lies in the text."""

    chunk: int
    start: int
    end: int


@dataclass(frozen=True)
class Point:
    """A document: one vector for the whole text, or `chunks` (then `vector` is None)."""

    id: str
    text: str
    metadata: dict[str, Any]
    vector: npt.NDArray[np.float32] | None = None
    vector_problem: str = ""  # why the vector sent could not be used, when it could not
    chunks: tuple[Chunk, ...] = ()


@dataclass(frozen=True)
class PointBatch:
    """Points column by column, as bulk loads move them: one vector matrix, no per-point objects."""

    ids: list[str]
    vectors: npt.NDArray[np.float32]  # (len(ids), dimension)
    texts: list[str]
    metadata_json: list[str]  # JSON object text per point


@dataclass(frozen=True)
class ScoredPoint:
    point: Point
    score: float
    span: Span | None = None  # the best chunk (vector and hybrid hits)


@dataclass(frozen=True)
class ItemError:
    index: int
    id: str
    message: str
