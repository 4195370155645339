"""Translation between the api core's plain types and the search service's contract."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2

from meshsearch.search.v1 import search_pb2 as spb
from meshsearch_api.domain import CollectionInfo, Document, ModelIdentity

METRIC_NAMES = {spb.METRIC_COSINE: "cosine", spb.METRIC_DOT: "dot", spb.METRIC_L2: "l2"}
METRIC_VALUES = {name: value for value, name in METRIC_NAMES.items()}


def collection_info(message: spb.Collection) -> CollectionInfo:
    return CollectionInfo(
        name=message.name,
        metric=METRIC_NAMES.get(message.metric, "cosine"),
        model=ModelIdentity(message.model.id, message.model.revision, message.model.dimension),
        document_count=message.point_count,
        create_time=message.create_time.ToDatetime() if message.HasField("create_time") else None,
    )


def document(point: spb.Point) -> Document:
    return Document(point.id, point.text, json_format.MessageToDict(point.metadata))


def struct(metadata: dict) -> struct_pb2.Struct:  # type: ignore[type-arg]
    message = struct_pb2.Struct()
    message.update(metadata)
    return message
