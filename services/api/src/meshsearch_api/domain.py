"""Plain data types of the api core (no protobuf messages; gRPC status codes name per-item errors)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc

from meshsearch_common.vectors import Metric
from meshsearch_common.vectors import ModelIdentity as ModelIdentity  # shared by every service; re-exported


class SearchMode(enum.Enum):
    VECTOR = "vector"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class Chunking:
    """Tokens per chunk and of overlap; 0 tokens per chunk means the model's whole window."""

    chunk_tokens: int = 0
    overlap_tokens: int = 0
    truncate: bool = False  # embed only the first window; the sizes are then unused


@dataclass(frozen=True)
class CollectionSpec:
    """What a caller chooses when creating a collection (0 / None: the server's default)."""

    name: str
    metric: Metric
    half_precision: bool = False
    hnsw_m: int = 0
    hnsw_ef_construction: int = 0
    chunking: Chunking | None = None
    mixed_numerics: bool = False
    shards: int = 0  # PostgreSQL servers the documents are spread over (0: the search service's own)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    metric: Metric
    model: ModelIdentity
    document_count: int
    create_time: datetime | None
    half_precision: bool = False
    hnsw_m: int = 0
    hnsw_ef_construction: int = 0
    chunking: Chunking = field(default_factory=Chunking)
    mixed_numerics: bool = False
    shards: int = 0


@dataclass(frozen=True)
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Span:
    """The chunk of a document that matched: its position and characters [start, end)."""

    chunk: int  # the chunk's position in the document (ChunkSpan.index on the public contract)
    start: int
    end: int


@dataclass(frozen=True)
class Hit:
    document: Document
    score: float
    span: Span | None = None


@dataclass(frozen=True)
class SearchQuery:
    """One search as the caller asked for it. `filter` is the metadata filter in its wire form:
    the api passes it on unread and the search service, which owns the grammar, checks it."""

    collection: str
    text: str
    top_k: int = 0
    mode: SearchMode = SearchMode.VECTOR
    score_threshold: float | None = None
    filter: bytes = b""
    ef_search: int = 0
    exact: bool = False
    include_text: bool = True
    include_metadata: bool = True
    allow_partial_results: bool = False  # a sharded collection may answer without a shard that is down


@dataclass(frozen=True)
class Ranked:
    """The search service's answer: hits, and the shards a partial answer left out (named)."""

    hits: list[Hit]
    unavailable_shards: tuple[str, ...] = ()

    @property
    def partial_reason(self) -> str:
        if not self.unavailable_shards:
            return ""
        return f"partial results: {'; '.join(self.unavailable_shards)} could not be reached"


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    mode: SearchMode  # the mode that answered (keyword when degraded)
    degraded_reason: str = ""  # why the asked mode could not be used; empty when it was


@dataclass
class LimitViolation:
    """A documented limit that documents break (as meshsearch.api.v1.LimitViolation): one
    document's, from `documents.document_problem`, or a tally over many (an estimate)."""

    limit: str  # the limit's stable name, such as "max_text_bytes" or "duplicate_id"
    description: str  # what the limit is and how to fix the document
    documents: int = 0
    example_ids: list[str] | None = None


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
