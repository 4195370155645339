"""Plain data types of the search core (no gRPC, no SQL)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt


class Metric(enum.Enum):
    COSINE = "cosine"
    DOT = "dot"
    L2 = "l2"


class Storage(enum.Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"


@dataclass(frozen=True)
class ModelIdentity:
    id: str = ""
    revision: str = ""
    dimension: int = 0
    normalized: bool = False


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    dimension: int
    metric: Metric = Metric.COSINE
    storage: Storage = Storage.FLOAT32
    hnsw_m: int = 16
    hnsw_ef_construction: int = 64
    model: ModelIdentity = field(default_factory=ModelIdentity)


@dataclass(frozen=True)
class Collection:
    id: int
    spec: CollectionSpec
    create_time: datetime
    point_count: int = 0
    index_ready: bool = True

    @property
    def table(self) -> str:
        return f"meshsearch_points_{self.id}"

    @property
    def hnsw_index(self) -> str:
        return f"meshsearch_points_{self.id}_hnsw"


@dataclass(frozen=True)
class Point:
    id: str
    text: str
    metadata: dict[str, Any]
    vector: npt.NDArray[np.float32] | None = None
    vector_problem: str = ""  # why the vector sent could not be used, when it could not


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


@dataclass(frozen=True)
class ItemError:
    index: int
    id: str
    message: str
