"""Every translation between the api's plain types and the two contracts it speaks: its own
(`meshsearch.api.v1`, to callers) and the search service's (`meshsearch.search.v1`). Adapters
and clients call these; nothing else builds or reads those messages field by field."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.search.v1 import search_pb2 as spb
from meshsearch_api.domain import CollectionInfo, Document, Hit, IndexOutcome, ModelIdentity
from meshsearch_common import vectors
from meshsearch_common.vectors import Metric

# --- shared ----------------------------------------------------------------------------------


def struct(metadata: dict[str, Any]) -> struct_pb2.Struct:
    """Metadata as a protobuf Struct (what both contracts carry)."""
    message = struct_pb2.Struct()
    message.update(metadata)
    return message


# --- meshsearch.api.v1 (our callers) ---------------------------------------------------------


def metric_in(message: pb.Collection) -> Metric:
    return vectors.metric_from_wire(pb.Metric, message.metric, "collection.metric")


def collection_out(info: CollectionInfo) -> pb.Collection:
    message = pb.Collection(
        name=info.name,
        metric=vectors.metric_to_wire(pb.Metric, info.metric),
        model=pb.EmbeddingModel(id=info.model.id, revision=info.model.revision, dimension=info.model.dimension),
        document_count=info.document_count,
    )
    if info.create_time is not None:
        message.create_time.FromDatetime(info.create_time)
    return message


def document_in(message: pb.Document) -> Document:
    metadata = json_format.MessageToDict(message.metadata) if message.HasField("metadata") else {}
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


def hit_out(hit: Hit) -> pb.SearchHit:
    return pb.SearchHit(document=document_out(hit.document), score=hit.score)


# --- meshsearch.search.v1 (the search service) -----------------------------------------------


def model_to_search(model: ModelIdentity) -> spb.EmbeddingModel:
    """The identity sent with every write and query; the api only stores normalized vectors."""
    return spb.EmbeddingModel(id=model.id, revision=model.revision, dimension=model.dimension, normalized=True)


def collection_from_search(message: spb.Collection) -> CollectionInfo:
    return CollectionInfo(
        name=message.name,
        metric=vectors.metric_from_wire(spb.Metric, message.metric, "collection.metric"),
        model=ModelIdentity(message.model.id, message.model.revision, message.model.dimension),
        document_count=message.point_count,
        create_time=message.create_time.ToDatetime() if message.HasField("create_time") else None,
    )


def point_to_search(document: Document, vector: Any, dimension: int) -> spb.Point:
    return spb.Point(
        id=document.id,
        vector=spb.Vector(data=vectors.pack(vector), dimension=dimension),
        text=document.text,
        metadata=struct(document.metadata),
    )


def document_from_search(point: spb.Point) -> Document:
    return Document(point.id, point.text, json_format.MessageToDict(point.metadata))
