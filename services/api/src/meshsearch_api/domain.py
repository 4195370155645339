"""Plain data types of the api core (no protobuf messages; gRPC status codes name per-item errors)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from meshsearch_common.vectors import Metric
from meshsearch_common.vectors import ModelIdentity as ModelIdentity  # shared by every service; re-exported


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    metric: Metric
    model: ModelIdentity
    document_count: int
    create_time: datetime | None


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    document: Document
    score: float


@dataclass(frozen=True)
class DocumentError:
    index: int
    id: str
    code: grpc.StatusCode
    message: str


@dataclass(frozen=True)
class IndexOutcome:
    """What an IndexDocuments call did, and how loaded the embedder was (the signal clients size
    their concurrency from)."""

    indexed_count: int
    errors: list[DocumentError]
    embedder_queue_s: float = 0.0
    embedder_backlog_s: float = 0.0
