"""The search service's contract (meshsearch.search.v1) to and from the api's plain types: what
the api sends with every write and query, and reads back."""

from __future__ import annotations

from datetime import UTC

import numpy as np
import numpy.typing as npt
from google.protobuf import json_format

from meshsearch.search.v1 import search_pb2 as spb
from meshsearch_api.chunking import EmbeddedDocument
from meshsearch_api.domain import (
    Chunking,
    CollectionInfo,
    Document,
    Hit,
    ModelIdentity,
    SearchMode,
    SearchQuery,
    Span,
)
from meshsearch_common import vectors
from meshsearch_common.json_values import struct_of


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
        shards=message.shards,
    )


def point_to_search(item: EmbeddedDocument, dimension: int) -> spb.Point:
    document = item.document
    point = spb.Point(id=document.id, text=document.text, metadata=struct_of(document.metadata))
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
        allow_partial_results=query.allow_partial_results,
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
