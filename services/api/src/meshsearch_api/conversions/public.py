"""meshsearch.api.v1 to and from the api's plain types: collections, documents, searches."""

from __future__ import annotations

from typing import Any

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_api.domain import (
    Chunking,
    CollectionInfo,
    CollectionSpec,
    Document,
    Hit,
    IndexOutcome,
    SearchMode,
    SearchQuery,
    SearchResult,
)
from meshsearch_common import vectors
from meshsearch_common.errors import enum_member, finite
from meshsearch_common.json_values import python_value, struct_of

STORAGE_HALF: dict[int, bool] = {pb.STORAGE_UNSPECIFIED: False, pb.STORAGE_FLOAT32: False, pb.STORAGE_FLOAT16: True}
MODES: dict[int, SearchMode] = {
    pb.SEARCH_MODE_UNSPECIFIED: SearchMode.VECTOR,
    pb.SEARCH_MODE_VECTOR: SearchMode.VECTOR,
    pb.SEARCH_MODE_KEYWORD: SearchMode.KEYWORD,
    pb.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
}
MODES_OUT: dict[SearchMode, Any] = {
    mode: number for number, mode in MODES.items() if number != pb.SEARCH_MODE_UNSPECIFIED
}


def collection_spec_in(message: pb.Collection) -> CollectionSpec:
    has_chunking = message.HasField("chunking")
    return CollectionSpec(
        name=message.name,
        metric=vectors.metric_from_wire(pb.Metric, message.metric, "collection.metric"),
        half_precision=enum_member(STORAGE_HALF, message.storage, "collection.storage"),
        hnsw_m=message.hnsw.m,
        hnsw_ef_construction=message.hnsw.ef_construction,
        chunking=Chunking(message.chunking.chunk_tokens, message.chunking.overlap_tokens, message.chunking.truncate)
        if has_chunking
        else None,
        mixed_numerics=message.mixed_numerics,
        shards=message.shards,
    )


def collection_out(info: CollectionInfo) -> pb.Collection:
    message = pb.Collection(
        name=info.name,
        metric=vectors.metric_to_wire(pb.Metric, info.metric),
        model=pb.EmbeddingModel(
            id=info.model.id, revision=info.model.revision, dimension=info.model.dimension, numerics=info.model.numerics
        ),
        mixed_numerics=info.mixed_numerics,
        shards=info.shards,
        document_count=info.document_count,
        storage=pb.STORAGE_FLOAT16 if info.half_precision else pb.STORAGE_FLOAT32,
        hnsw=pb.HnswParams(m=info.hnsw_m, ef_construction=info.hnsw_ef_construction),
        chunking=pb.Chunking(
            chunk_tokens=info.chunking.chunk_tokens,
            overlap_tokens=info.chunking.overlap_tokens,
            truncate=info.chunking.truncate,
        ),
    )
    if info.create_time is not None:
        message.create_time.FromDatetime(info.create_time)
    return message


def document_in(message: pb.Document) -> Document:
    metadata = python_value(message.metadata, "metadata") if message.HasField("metadata") else {}
    return Document(message.id, message.text, metadata)


def document_out(document: Document) -> pb.Document:
    return pb.Document(id=document.id, text=document.text, metadata=struct_of(document.metadata))


def index_outcome_out(outcome: IndexOutcome) -> pb.IndexDocumentsResponse:
    return pb.IndexDocumentsResponse(
        indexed_count=outcome.indexed_count,
        errors=[
            pb.DocumentError(index=e.index, id=e.id, code=e.code.value[0], message=e.message) for e in outcome.errors
        ],
        load=pb.LoadReport(
            embedder_queue_seconds=outcome.embedder_queue_s, embedder_backlog_seconds=outcome.embedder_backlog_s
        ),
    )


def search_query_in(message: pb.SearchRequest) -> SearchQuery:
    return SearchQuery(
        collection=message.collection,
        text=message.query,
        top_k=message.top_k,
        mode=enum_member(MODES, message.mode, "mode"),
        score_threshold=finite(message.score_threshold, "score_threshold")
        if message.HasField("score_threshold")
        else None,
        filter=message.filter.SerializeToString() if message.HasField("filter") else b"",
        ef_search=message.ef_search,
        exact=message.exact,
        include_text=message.include_text if message.HasField("include_text") else True,
        include_metadata=message.include_metadata if message.HasField("include_metadata") else True,
        allow_partial_results=message.allow_partial_results,
    )


def hit_out(hit: Hit) -> pb.SearchHit:
    message = pb.SearchHit(document=document_out(hit.document), score=hit.score)
    if hit.span is not None:
        message.chunk.index, message.chunk.start, message.chunk.end = hit.span.chunk, hit.span.start, hit.span.end
    return message


def search_result_out(result: SearchResult) -> pb.SearchResponse:
    return pb.SearchResponse(
        hits=[hit_out(hit) for hit in result.hits],
        degraded=bool(result.degraded_reason),
        degraded_reason=result.degraded_reason,
        mode=MODES_OUT[result.mode],
    )
