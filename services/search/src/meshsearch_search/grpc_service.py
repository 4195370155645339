"""gRPC adapter of the search service: checks limits, translates messages through `conversions`;
the stores do the work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc as pb_grpc
from meshsearch_common import vectors
from meshsearch_common.errors import InvalidArgument, enum_member
from meshsearch_common.identifiers import check_document_ids
from meshsearch_common.readiness import Readiness
from meshsearch_search import conversions
from meshsearch_search.bulk import BulkLoader
from meshsearch_search.collections import CollectionStore
from meshsearch_search.domain import (
    HNSW_DEFAULT_EF_CONSTRUCTION,
    HNSW_DEFAULT_M,
    CollectionSpec,
    PointBatch,
)
from meshsearch_search.index_keeper import IndexKeeper
from meshsearch_search.points import PointStore
from meshsearch_search.retrieval import Retriever


@dataclass(frozen=True)
class Stores:
    collections: CollectionStore
    points: PointStore
    retriever: Retriever
    bulk: BulkLoader
    indexes: IndexKeeper
    batch_concurrency: int = 4


class VectorStoreServicer(pb_grpc.VectorStoreServiceServicer):
    def __init__(self, stores: Readiness[Stores]) -> None:
        self._stores = stores

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateCollectionResponse:
        message = request.collection
        spec = CollectionSpec(
            name=message.name,
            dimension=message.dimension,
            metric=vectors.metric_from_wire(pb.Metric, message.metric, "collection.metric"),
            storage=enum_member(conversions.STORAGE, message.storage, "collection.storage"),
            hnsw_m=message.hnsw.m or HNSW_DEFAULT_M,
            hnsw_ef_construction=message.hnsw.ef_construction or HNSW_DEFAULT_EF_CONSTRUCTION,
            model=conversions.model_in(message.model),
            chunk_tokens=message.chunk_tokens,
            chunk_overlap_tokens=message.chunk_overlap_tokens,
            chunk_truncate=message.chunk_truncate,
            mixed_numerics=message.mixed_numerics,
            shards=message.shards,
        )
        collection = await self._stores.get().collections.create(spec)
        return pb.CreateCollectionResponse(collection=conversions.collection_out(collection))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetCollectionResponse:
        collection = await self._stores.get().collections.get(request.name)
        return pb.GetCollectionResponse(collection=conversions.collection_out(collection))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCollectionsResponse:
        collections = await self._stores.get().collections.list(
            request.tenant, request.after, request.limit, counts=not request.skip_counts
        )
        return pb.ListCollectionsResponse(collections=[conversions.collection_out(c) for c in collections])

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteCollectionResponse:
        await self._stores.get().collections.delete(request.name)
        return pb.DeleteCollectionResponse()

    async def Upsert(self, request: pb.UpsertRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.UpsertResponse:
        stores = self._stores.get()
        points = [conversions.point_in(point) for point in request.points]
        model = conversions.model_in(request.model) if request.HasField("model") else None
        written = await stores.points.upsert(request.collection, points, model, request.receipt)
        return pb.UpsertResponse(
            upserted_count=written.upserted,
            errors=[
                pb.ItemError(index=e.index, id=e.id, code=conversions.INVALID, message=e.message)
                for e in written.errors
            ],
            already_applied=written.already_applied,
        )

    async def GetReceipts(
        self, request: pb.GetReceiptsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetReceiptsResponse:
        recorded = await self._stores.get().points.recorded_receipts(request.collection, list(request.receipts))
        return pb.GetReceiptsResponse(recorded=recorded)

    async def DeleteReceipts(
        self, request: pb.DeleteReceiptsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteReceiptsResponse:
        count = await self._stores.get().points.delete_receipts(request.collection, request.prefix)
        return pb.DeleteReceiptsResponse(deleted_count=count)

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
            return conversions.merge_batches(
                conversions.rows_to_batch(message.points), conversions.columns_in(message.columns)
            )

        first = await anext(aiter(request_iterator), None)
        if first is None or not first.collection:
            raise InvalidArgument("the first BulkUpsertRequest must name the collection")
        model = conversions.model_in(first.model) if first.HasField("model") else None

        async def batches() -> AsyncIterator[PointBatch]:
            yield batch_of(first)
            async for message in request_iterator:
                if message.collection and message.collection != first.collection:
                    raise InvalidArgument("a bulk load writes one collection; it cannot change mid-stream")
                yield batch_of(message)

        result = await stores.bulk.load(first.collection, batches(), model)
        return pb.BulkUpsertResponse(upserted_count=result.upserted_count, index_build_seconds=result.index_build_s)

    async def DeferIndex(
        self, request: pb.DeferIndexRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeferIndexResponse:
        # From the fields, not ToTimedelta(), which overflows on a lease of centuries; the keeper
        # refuses whatever lies outside its range.
        lease_s = request.lease.seconds + request.lease.nanos / 1e9
        until = await self._stores.get().indexes.defer(request.collection, lease_s)
        response = pb.DeferIndexResponse(deferred=until is not None)
        if until is not None:
            response.deferred_until.FromDatetime(until)
        return response

    async def BuildIndex(
        self, request: pb.BuildIndexRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.BuildIndexResponse:
        await self._stores.get().indexes.build_soon(request.collection)
        return pb.BuildIndexResponse()

    async def Get(self, request: pb.GetRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetResponse:
        check_document_ids(request.ids, "ids")
        points, missing = await self._stores.get().points.get(
            request.collection, list(request.ids), request.include_vectors
        )
        response = pb.GetResponse(missing_ids=missing)
        conversions.points_out(points, response)
        return response

    async def Delete(self, request: pb.DeleteRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.DeleteResponse:
        check_document_ids(request.ids, "ids")
        node = conversions.filter_in(request.filter) if request.HasField("filter") else None
        count = await self._stores.get().points.delete(request.collection, list(request.ids), node)
        return pb.DeleteResponse(deleted_count=count)

    async def Scroll(self, request: pb.ScrollRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.ScrollResponse:
        points, cursor = await self._stores.get().points.scroll(
            request.collection,
            conversions.filter_in(request.filter),
            request.limit,
            request.cursor,
            request.include_vectors,
        )
        response = pb.ScrollResponse(next_cursor=cursor)
        conversions.points_out(points, response)
        return response

    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.QueryResponse:
        answer = await self._stores.get().retriever.answer(request.collection, conversions.query_in(request))
        response = pb.QueryResponse()
        conversions.answer_out(answer, response)
        return response

    async def QueryBatch(
        self, request: pb.QueryBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.QueryBatchResponse:
        stores = self._stores.get()
        if not request.queries:
            raise InvalidArgument("queries must not be empty")
        if len(request.queries) > stores.points.limits.max_batch_queries:
            raise InvalidArgument(
                f"{len(request.queries)} queries exceed the limit of {stores.points.limits.max_batch_queries} per batch"
            )
        specs = []
        for index, query in enumerate(request.queries):
            try:
                specs.append((query.collection, conversions.query_in(query)))
            except InvalidArgument as exc:
                raise InvalidArgument(f"queries[{index}]: {exc.message}") from None
        answers = await stores.retriever.query_batch(specs, stores.batch_concurrency)
        response = pb.QueryBatchResponse()
        for answer in answers:
            conversions.answer_out(answer, response.results.add())
        return response
