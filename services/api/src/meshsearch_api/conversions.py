"""Every translation between the api's plain types and the two contracts it speaks: its own
(`meshsearch.api.v1`, to callers) and the search service's (`meshsearch.search.v1`). Adapters
and clients call these; nothing else builds or reads those messages field by field."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format, struct_pb2

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.search.v1 import search_pb2 as spb
from meshsearch_api.chunking import EmbeddedDocument
from meshsearch_api.domain import (
    Chunking,
    CollectionInfo,
    CollectionSpec,
    Document,
    Hit,
    IndexOutcome,
    ModelIdentity,
    SearchMode,
    SearchQuery,
    SearchResult,
    Span,
)
from meshsearch_api.ingest.model import DeadLetter, Estimate, Job, JobState, Priority, Progress
from meshsearch_common import vectors
from meshsearch_common.errors import enum_member, finite
from meshsearch_common.json_values import python_value

# --- shared ----------------------------------------------------------------------------------


def struct(metadata: dict[str, Any]) -> struct_pb2.Struct:
    """Metadata as a protobuf Struct (what both contracts carry)."""
    message = struct_pb2.Struct()
    message.update(metadata)
    return message


# --- meshsearch.api.v1 (our callers) ---------------------------------------------------------


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
    )


def collection_out(info: CollectionInfo) -> pb.Collection:
    message = pb.Collection(
        name=info.name,
        metric=vectors.metric_to_wire(pb.Metric, info.metric),
        model=pb.EmbeddingModel(
            id=info.model.id, revision=info.model.revision, dimension=info.model.dimension, numerics=info.model.numerics
        ),
        mixed_numerics=info.mixed_numerics,
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
    return pb.Document(id=document.id, text=document.text, metadata=struct(document.metadata))


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
    )


def hit_out(hit: Hit) -> pb.SearchHit:
    message = pb.SearchHit(document=document_out(hit.document), score=hit.score)
    if hit.span is not None:
        message.chunk.index, message.chunk.start, message.chunk.end = hit.span.index, hit.span.start, hit.span.end
    return message


def search_result_out(result: SearchResult) -> pb.SearchResponse:
    return pb.SearchResponse(
        hits=[hit_out(hit) for hit in result.hits],
        degraded=bool(result.degraded_reason),
        degraded_reason=result.degraded_reason,
        mode=MODES_OUT[result.mode],
    )


# --- meshsearch.search.v1 (the search service) -----------------------------------------------


def model_to_search(model: ModelIdentity) -> spb.EmbeddingModel:
    """The identity sent with every write and query; the api only stores normalized vectors."""
    return spb.EmbeddingModel(
        id=model.id, revision=model.revision, dimension=model.dimension, normalized=True, numerics=model.numerics
    )


def collection_from_search(message: spb.Collection) -> CollectionInfo:
    return CollectionInfo(
        name=message.name,
        metric=vectors.metric_from_wire(spb.Metric, message.metric, "collection.metric"),
        model=ModelIdentity(
            message.model.id, message.model.revision, message.model.dimension, numerics=message.model.numerics
        ),
        document_count=message.point_count,
        create_time=message.create_time.ToDatetime(tzinfo=UTC) if message.HasField("create_time") else None,
        half_precision=message.storage == spb.STORAGE_FLOAT16,
        hnsw_m=message.hnsw.m,
        hnsw_ef_construction=message.hnsw.ef_construction,
        chunking=Chunking(message.chunk_tokens, message.chunk_overlap_tokens, message.chunk_truncate),
        mixed_numerics=message.mixed_numerics,
    )


def point_to_search(item: EmbeddedDocument, dimension: int) -> spb.Point:
    document = item.document
    point = spb.Point(id=document.id, text=document.text, metadata=struct(document.metadata))
    if item.vector is not None:
        point.vector.data, point.vector.dimension = vectors.pack(item.vector), dimension
    for vector, start, end in item.chunks:
        point.chunks.add(vector=spb.Vector(data=vectors.pack(vector), dimension=dimension), start=start, end=end)
    return point


def filter_to_search(filter_wire: bytes) -> spb.Filter:
    """The public Filter as the search service's: the two messages are the same on the wire
    (same field numbers and types), so the bytes are reread as the other message."""
    return spb.Filter.FromString(filter_wire)


def query_to_search(
    query: SearchQuery, k: int, vector: npt.NDArray[np.float32] | None, model: ModelIdentity | None
) -> spb.QueryRequest:
    request = spb.QueryRequest(
        collection=query.collection,
        k=k,
        ef_search=query.ef_search,
        exact=query.exact,
        filter=filter_to_search(query.filter),
        omit_text=not query.include_text,
        omit_metadata=not query.include_metadata,
    )
    if vector is not None and model is not None:
        request.vector.data, request.vector.dimension = vectors.pack(vector), model.dimension
        request.model.CopyFrom(model_to_search(model))
    if vector is None or query.mode is SearchMode.HYBRID:
        request.text = query.text
    if query.score_threshold is not None:
        request.score_threshold = query.score_threshold
    return request


def hit_from_search(hit: spb.ScoredPoint) -> Hit:
    span = Span(hit.span.chunk, hit.span.start, hit.span.end) if hit.HasField("span") else None
    return Hit(document_from_search(hit.point), hit.score, span)


def document_from_search(point: spb.Point) -> Document:
    return Document(point.id, point.text, json_format.MessageToDict(point.metadata))


# --- ingest jobs (meshsearch.api.v1 IngestService) --------------------------------------------

PRIORITIES: dict[int, Priority] = {
    pb.JOB_PRIORITY_UNSPECIFIED: Priority.NORMAL,
    pb.JOB_PRIORITY_BULK: Priority.BULK,
    pb.JOB_PRIORITY_NORMAL: Priority.NORMAL,
    pb.JOB_PRIORITY_INTERACTIVE: Priority.INTERACTIVE,
}
PRIORITIES_OUT: dict[Priority, Any] = {
    Priority.BULK: pb.JOB_PRIORITY_BULK,
    Priority.NORMAL: pb.JOB_PRIORITY_NORMAL,
    Priority.INTERACTIVE: pb.JOB_PRIORITY_INTERACTIVE,
}
JOB_STATES_OUT: dict[JobState, Any] = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.COMPLETED: pb.JOB_STATE_COMPLETED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}


def priority_in(value: int) -> Priority:
    return enum_member(PRIORITIES, value, "start.priority")


def job_out(job: Job) -> pb.Job:
    message = pb.Job(
        id=job.id,
        collection=job.collection,
        state=JOB_STATES_OUT[job.state],
        priority=PRIORITIES_OUT[job.priority],
        upload_complete=job.upload_complete,
        received=job.received,
        done=job.done,
        failed=job.failed,
        error=job.error,
    )
    message.create_time.FromDatetime(job.create_time)
    message.update_time.FromDatetime(job.update_time)
    if job.finish_time is not None:
        message.finish_time.FromDatetime(job.finish_time)
    return message


def progress_out(progress: Progress) -> pb.WatchJobResponse:
    message = pb.WatchJobResponse(job=job_out(progress.job), documents_per_second=progress.documents_per_second)
    if progress.eta_s is not None:
        message.eta.FromTimedelta(timedelta(seconds=progress.eta_s))
    return message


def dead_letter_out(letter: DeadLetter) -> pb.DeadLetter:
    message = pb.DeadLetter(
        sequence=letter.sequence,
        document_id=letter.document_id,
        code=letter.code,
        reason=letter.reason,
        attempts=letter.attempts,
    )
    message.create_time.FromDatetime(letter.create_time)
    return message


def estimate_out(estimate: Estimate) -> pb.EstimateIngestResponse:
    message = pb.EstimateIngestResponse(
        documents=estimate.documents,
        chunks=estimate.chunks,
        tokens=estimate.tokens,
        embedder_tokens_per_second=estimate.tokens_per_second,
        violations=[
            pb.LimitViolation(
                limit=v.limit, documents=v.documents, description=v.description, example_ids=v.example_ids or []
            )
            for v in estimate.violations
        ],
    )
    if estimate.duration_s is not None:
        message.estimated_duration.FromTimedelta(timedelta(seconds=estimate.duration_s))
    return message
