"""gRPC adapter of the search service: validates and translates messages; stores do the work."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import json_format, struct_pb2

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc as pb_grpc
from meshsearch_common import vectors
from meshsearch_common.errors import InvalidArgument
from meshsearch_common.readiness import Readiness
from meshsearch_search.collections import CollectionStore
from meshsearch_search.domain import Collection, CollectionSpec, Metric, ModelIdentity, Point, ScoredPoint, Storage
from meshsearch_search.points import PointStore

_METRICS = {
    pb.METRIC_UNSPECIFIED: Metric.COSINE,
    pb.METRIC_COSINE: Metric.COSINE,
    pb.METRIC_DOT: Metric.DOT,
    pb.METRIC_L2: Metric.L2,
}
_METRICS_OUT = {Metric.COSINE: pb.METRIC_COSINE, Metric.DOT: pb.METRIC_DOT, Metric.L2: pb.METRIC_L2}
_STORAGE = {
    pb.STORAGE_UNSPECIFIED: Storage.FLOAT32,
    pb.STORAGE_FLOAT32: Storage.FLOAT32,
    pb.STORAGE_FLOAT16: Storage.FLOAT16,
}
_STORAGE_OUT = {Storage.FLOAT32: pb.STORAGE_FLOAT32, Storage.FLOAT16: pb.STORAGE_FLOAT16}


@dataclass(frozen=True)
class Stores:
    collections: CollectionStore
    points: PointStore


def _model_in(message: pb.EmbeddingModel) -> ModelIdentity:
    return ModelIdentity(message.id, message.revision, message.dimension, message.normalized)


def _collection_out(collection: Collection) -> pb.Collection:
    spec = collection.spec
    message = pb.Collection(
        name=spec.name,
        dimension=spec.dimension,
        metric=_METRICS_OUT[spec.metric],
        storage=_STORAGE_OUT[spec.storage],
        hnsw=pb.HnswParams(m=spec.hnsw_m, ef_construction=spec.hnsw_ef_construction),
        model=pb.EmbeddingModel(
            id=spec.model.id,
            revision=spec.model.revision,
            dimension=spec.model.dimension,
            normalized=spec.model.normalized,
        ),
        point_count=collection.point_count,
        index_state=pb.INDEX_STATE_READY if collection.index_ready else pb.INDEX_STATE_BUILDING,
    )
    message.create_time.FromDatetime(collection.create_time)
    return message


def _vector_in(message: pb.Vector, what: str):  # type: ignore[no-untyped-def]
    if not message.data:
        raise InvalidArgument(f"{what} is required")
    matrix = vectors.unpack(message.data, message.dimension)
    if matrix.shape[0] != 1:
        raise InvalidArgument(f"{what} holds {matrix.shape[0]} vectors; send exactly one (dimension * 4 bytes)")
    return matrix[0]


def _point_in(message: pb.Point, index: int) -> Point:
    vector = None
    if message.vector.data:
        try:
            vector = _vector_in(message.vector, f"points[{index}].vector")
        except InvalidArgument:
            vector = None  # reported per item by the store as "vector is required"
    return Point(
        id=message.id,
        text=message.text,
        metadata=json_format.MessageToDict(message.metadata) if message.HasField("metadata") else {},
        vector=vector,
    )


def _point_out(point: Point) -> pb.Point:
    metadata = struct_pb2.Struct()
    metadata.update(point.metadata)
    message = pb.Point(id=point.id, text=point.text, metadata=metadata)
    if point.vector is not None:
        message.vector.CopyFrom(pb.Vector(data=vectors.pack(point.vector), dimension=point.vector.shape[0]))
    return message


def _scored_out(hit: ScoredPoint) -> pb.ScoredPoint:
    return pb.ScoredPoint(point=_point_out(hit.point), score=hit.score)


class VectorStoreServicer(pb_grpc.VectorStoreServiceServicer):
    def __init__(self, stores: Readiness[Stores]) -> None:
        self._stores = stores

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        message = request.collection
        spec = CollectionSpec(
            name=message.name,
            dimension=message.dimension,
            metric=_METRICS[message.metric],
            storage=_STORAGE[message.storage],
            hnsw_m=message.hnsw.m or 16,
            hnsw_ef_construction=message.hnsw.ef_construction or 64,
            model=_model_in(message.model),
        )
        collection = await self._stores.get().collections.create(spec)
        return pb.CreateCollectionResponse(collection=_collection_out(collection))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        collection = await self._stores.get().collections.get(request.name)
        return pb.GetCollectionResponse(collection=_collection_out(collection))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        collections = await self._stores.get().collections.list()
        return pb.ListCollectionsResponse(collections=[_collection_out(c) for c in collections])

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        await self._stores.get().collections.delete(request.name)
        return pb.DeleteCollectionResponse()

    async def Upsert(self, request: pb.UpsertRequest, context: grpc.aio.ServicerContext) -> pb.UpsertResponse:
        points = [_point_in(point, index) for index, point in enumerate(request.points)]
        model = _model_in(request.model) if request.HasField("model") else None
        count, errors = await self._stores.get().points.upsert(request.collection, points, model)
        return pb.UpsertResponse(
            upserted_count=count,
            errors=[
                pb.ItemError(index=e.index, id=e.id, code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=e.message)
                for e in errors
            ],
        )

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext) -> pb.GetResponse:
        points, missing = await self._stores.get().points.get(
            request.collection, list(request.ids), request.include_vectors
        )
        return pb.GetResponse(points=[_point_out(p) for p in points], missing_ids=missing)

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        count = await self._stores.get().points.delete(request.collection, list(request.ids))
        return pb.DeleteResponse(deleted_count=count)

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext) -> pb.QueryResponse:
        vector = _vector_in(request.vector, "vector")
        hits = await self._stores.get().points.query(
            request.collection,
            vector,
            request.k,
            ef_search=request.ef_search,
            exact=request.exact,
            score_threshold=request.score_threshold if request.HasField("score_threshold") else None,
            include_vectors=request.include_vectors,
        )
        return pb.QueryResponse(points=[_scored_out(hit) for hit in hits])
