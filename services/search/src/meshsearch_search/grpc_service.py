"""gRPC adapter of the search service: validates and translates messages; stores do the work."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from google.protobuf import json_format

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc as pb_grpc
from meshsearch_common import vectors
from meshsearch_common.errors import InvalidArgument, enum_member, finite
from meshsearch_common.limits import check_message_size
from meshsearch_common.readiness import Readiness
from meshsearch_search.bulk import BulkLoader
from meshsearch_search.collections import CollectionStore
from meshsearch_search.domain import (
    HNSW_DEFAULT_EF_CONSTRUCTION,
    HNSW_DEFAULT_M,
    Collection,
    CollectionSpec,
    ModelIdentity,
    Point,
    PointBatch,
    ScoredPoint,
    Storage,
)
from meshsearch_search.filters import FieldCondition, Filter
from meshsearch_search.points import PointStore
from meshsearch_search.retrieval import QuerySpec, Retriever

_STORAGE: dict[int, Storage] = {
    pb.STORAGE_UNSPECIFIED: Storage.FLOAT32,
    pb.STORAGE_FLOAT32: Storage.FLOAT32,
    pb.STORAGE_FLOAT16: Storage.FLOAT16,
}
_STORAGE_OUT = {Storage.FLOAT32: pb.STORAGE_FLOAT32, Storage.FLOAT16: pb.STORAGE_FLOAT16}
_INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


@dataclass(frozen=True)
class Stores:
    collections: CollectionStore
    points: PointStore
    retriever: Retriever
    bulk: BulkLoader
    max_request_bytes: int
    batch_concurrency: int = 4


def _model_in(message: pb.EmbeddingModel) -> ModelIdentity:
    return ModelIdentity(message.id, message.revision, message.dimension, message.normalized)


def _collection_out(collection: Collection) -> pb.Collection:
    spec = collection.spec
    message = pb.Collection(
        name=spec.name,
        dimension=spec.dimension,
        metric=vectors.metric_to_wire(pb.Metric, spec.metric),
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


def _vector_in(message: pb.Vector, what: str) -> npt.NDArray[np.float32]:
    matrix = vectors.unpack(message.data, message.dimension)
    if matrix.shape[0] != 1:
        raise InvalidArgument(f"{what} holds {matrix.shape[0]} vectors; send exactly one (dimension * 4 bytes)")
    row: npt.NDArray[np.float32] = matrix[0]
    return row


def _point_in(message: pb.Point) -> Point:
    """A point; an unusable vector is kept out, with the reason, and reported per item by the store."""
    vector, problem = None, ""
    if message.vector.data:
        try:
            vector = _vector_in(message.vector, "vector")
        except InvalidArgument as exc:
            problem = exc.message
    metadata = json_format.MessageToDict(message.metadata) if message.HasField("metadata") else {}
    return Point(id=message.id, text=message.text, metadata=metadata, vector=vector, vector_problem=problem)


def _columns_in(message: pb.PointColumns) -> PointBatch:
    """A columnar batch; shapes are checked here, values per point by the bulk loader."""
    count = len(message.ids)
    if count == 0:
        return PointBatch([], np.zeros((0, message.dimension or 1), np.float32), [], [])
    if message.dimension == 0 or len(message.vectors) != 4 * count * message.dimension:
        raise InvalidArgument(
            f"columns.vectors has {len(message.vectors)} bytes; expected 4 * {count} ids * dimension "
            f"{message.dimension} little-endian float32 values"
        )
    for name, column in (("texts", message.texts), ("metadata_json", message.metadata_json)):
        if len(column) not in (0, count):
            raise InvalidArgument(f"columns.{name} has {len(column)} entries; give one per id ({count}) or none")
    return PointBatch(
        ids=list(message.ids),
        vectors=vectors.view(message.vectors, message.dimension),
        texts=list(message.texts) or [""] * count,
        metadata_json=list(message.metadata_json) or ["{}"] * count,
    )


def _rows_to_batch(messages) -> PointBatch:  # type: ignore[no-untyped-def]
    """Row-wise points as a columnar batch; a missing or malformed vector fails the load."""
    rows = []
    for index, message in enumerate(messages):
        if not message.vector.data:
            raise InvalidArgument(f"points[{index}] (id {message.id!r}) has no vector; nothing was written")
        rows.append(_vector_in(message.vector, f"points[{index}].vector"))
    for index, row in enumerate(rows):
        if row.shape[0] != rows[0].shape[0]:
            raise InvalidArgument(
                f"points[{index}] (id {messages[index].id!r}) has dimension {row.shape[0]} but points[0] has "
                f"{rows[0].shape[0]}; nothing was written"
            )
    return PointBatch(
        ids=[m.id for m in messages],
        vectors=np.stack(rows) if rows else np.zeros((0, 1), np.float32),
        texts=[m.text for m in messages],
        metadata_json=[
            json.dumps(json_format.MessageToDict(m.metadata), separators=(",", ":")) if m.HasField("metadata") else "{}"
            for m in messages
        ],
    )


def _merge_batches(first: PointBatch, second: PointBatch) -> PointBatch:
    if not second.ids:
        return first
    if not first.ids:
        return second
    return PointBatch(
        first.ids + second.ids,
        np.concatenate([first.vectors, second.vectors]),
        first.texts + second.texts,
        first.metadata_json + second.metadata_json,
    )


def _fill_point(message: pb.Point, point: Point) -> None:
    """Writes `point` into a message already in its response: building a Point and then
    copying it into the response doubled the cost of answering a query (~2 µs per hit)."""
    message.id = point.id
    message.text = point.text
    if point.metadata:
        message.metadata.update(point.metadata)
    if point.vector is not None:
        message.vector.data = vectors.pack(point.vector)
        message.vector.dimension = point.vector.shape[0]


def _points_out(points: list[Point], response: pb.GetResponse | pb.ScrollResponse) -> None:
    for point in points:
        _fill_point(response.points.add(), point)


def _hits_out(hits: list[ScoredPoint], response: pb.QueryResponse) -> None:
    for hit in hits:
        scored = response.points.add()
        scored.score = hit.score
        _fill_point(scored.point, hit.point)


def _condition_in(message: pb.Condition) -> FieldCondition | Filter:
    if message.HasField("filter"):
        return filter_in(message.filter)
    if not message.HasField("field"):
        raise InvalidArgument("a filter condition needs either a field test or a nested filter")
    field = message.field
    kind = field.WhichOneof("match")
    if kind == "eq":
        return FieldCondition(field.key, "eq", json_format.MessageToDict(field.eq))
    if kind == "in":
        values = getattr(field, "in").values  # `in` is a Python keyword
        return FieldCondition(field.key, "in", [json_format.MessageToDict(v) for v in values])
    if kind == "range":
        bounds = {name: getattr(field.range, name) for name in ("gt", "gte", "lt", "lte") if field.range.HasField(name)}
        return FieldCondition(field.key, "range", bounds)
    if kind == "exists":
        return FieldCondition(field.key, "exists", field.exists)
    raise InvalidArgument(f"filter on '{field.key}' needs one of eq, in, range, exists")


def filter_in(message: pb.Filter) -> Filter:
    return Filter(
        must=tuple(_condition_in(c) for c in message.must),
        should=tuple(_condition_in(c) for c in message.should),
        must_not=tuple(_condition_in(c) for c in message.must_not),
    )


def _query_in(request: pb.QueryRequest) -> QuerySpec:
    return QuerySpec(
        vector=_vector_in(request.vector, "vector") if request.vector.data or request.vector.dimension else None,
        k=request.k,
        text=request.text,
        ef_search=request.ef_search,
        exact=request.exact,
        score_threshold=finite(request.score_threshold, "score_threshold")
        if request.HasField("score_threshold")
        else None,
        include_vectors=request.include_vectors,
        filter=filter_in(request.filter),
        model=_model_in(request.model) if request.HasField("model") else None,
    )


class VectorStoreServicer(pb_grpc.VectorStoreServiceServicer):
    def __init__(self, stores: Readiness[Stores]) -> None:
        self._stores = stores

    def _checked(self, request) -> Stores:  # type: ignore[no-untyped-def]
        stores = self._stores.get()
        check_message_size(request, stores.max_request_bytes)
        return stores

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateCollectionResponse:
        message = request.collection
        spec = CollectionSpec(
            name=message.name,
            dimension=message.dimension,
            metric=vectors.metric_from_wire(pb.Metric, message.metric, "collection.metric"),
            storage=enum_member(_STORAGE, message.storage, "collection.storage"),
            hnsw_m=message.hnsw.m or HNSW_DEFAULT_M,
            hnsw_ef_construction=message.hnsw.ef_construction or HNSW_DEFAULT_EF_CONSTRUCTION,
            model=_model_in(message.model),
        )
        collection = await self._checked(request).collections.create(spec)
        return pb.CreateCollectionResponse(collection=_collection_out(collection))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetCollectionResponse:
        collection = await self._checked(request).collections.get(request.name)
        return pb.GetCollectionResponse(collection=_collection_out(collection))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCollectionsResponse:
        collections = await self._checked(request).collections.list()
        return pb.ListCollectionsResponse(collections=[_collection_out(c) for c in collections])

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteCollectionResponse:
        await self._checked(request).collections.delete(request.name)
        return pb.DeleteCollectionResponse()

    async def Upsert(self, request: pb.UpsertRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.UpsertResponse:
        stores = self._checked(request)
        points = [_point_in(point) for point in request.points]
        model = _model_in(request.model) if request.HasField("model") else None
        count, errors = await stores.points.upsert(request.collection, points, model)
        return pb.UpsertResponse(
            upserted_count=count,
            errors=[pb.ItemError(index=e.index, id=e.id, code=_INVALID, message=e.message) for e in errors],
        )

    async def BulkUpsert(
        self, request_iterator: AsyncIterator[pb.BulkUpsertRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BulkUpsertResponse:
        stores = self._stores.get()
        limit = stores.points.limits.max_batch_points

        def batch_of(message: pb.BulkUpsertRequest) -> PointBatch:
            # Bounded by count, not by ByteSize(), which costs a full walk of every message;
            # each point is itself bounded by the text, metadata and dimension limits.
            size = len(message.points) + len(message.columns.ids)
            if size > limit:
                raise InvalidArgument(f"{size} points in one BulkUpsertRequest exceed the limit of {limit}")
            return _merge_batches(_rows_to_batch(message.points), _columns_in(message.columns))

        first = await anext(aiter(request_iterator), None)
        if first is None or not first.collection:
            raise InvalidArgument("the first BulkUpsertRequest must name the collection")
        model = _model_in(first.model) if first.HasField("model") else None

        async def batches() -> AsyncIterator[PointBatch]:
            yield batch_of(first)
            async for message in request_iterator:
                if message.collection and message.collection != first.collection:
                    raise InvalidArgument("a bulk load writes one collection; it cannot change mid-stream")
                yield batch_of(message)

        result = await stores.bulk.load(first.collection, batches(), model)
        return pb.BulkUpsertResponse(upserted_count=result.upserted_count, index_build_seconds=result.index_build_s)

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetResponse:
        points, missing = await self._checked(request).points.get(
            request.collection, list(request.ids), request.include_vectors
        )
        response = pb.GetResponse(missing_ids=missing)
        _points_out(points, response)
        return response

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.DeleteResponse:
        node = filter_in(request.filter) if request.HasField("filter") else None
        count = await self._checked(request).points.delete(request.collection, list(request.ids), node)
        return pb.DeleteResponse(deleted_count=count)

    async def Scroll(self, request: pb.ScrollRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.ScrollResponse:
        points, cursor = await self._checked(request).points.scroll(
            request.collection, filter_in(request.filter), request.limit, request.cursor, request.include_vectors
        )
        response = pb.ScrollResponse(next_cursor=cursor)
        _points_out(points, response)
        return response

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.QueryResponse:
        hits = await self._checked(request).retriever.query(request.collection, _query_in(request))
        response = pb.QueryResponse()
        _hits_out(hits, response)
        return response

    async def QueryBatch(
        self, request: pb.QueryBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.QueryBatchResponse:
        stores = self._checked(request)
        if not request.queries:
            raise InvalidArgument("queries must not be empty")
        if len(request.queries) > stores.points.limits.max_batch_queries:
            raise InvalidArgument(
                f"{len(request.queries)} queries exceed the limit of {stores.points.limits.max_batch_queries} per batch"
            )
        specs = []
        for index, query in enumerate(request.queries):
            try:
                specs.append((query.collection, _query_in(query)))
            except InvalidArgument as exc:
                raise InvalidArgument(f"queries[{index}]: {exc.message}") from None
        hit_lists = await stores.retriever.query_batch(specs, stores.batch_concurrency)
        response = pb.QueryBatchResponse()
        for hits in hit_lists:
            _hits_out(hits, response.results.add())
        return response
