"""gRPC adapter of the public api: translates meshsearch.api.v1 messages (through
`conversions`); the core does the work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api import conversions
from meshsearch_api.catalog import Catalog
from meshsearch_api.documents import Documents
from meshsearch_common.errors import finite
from meshsearch_common.readiness import Readiness


@dataclass(frozen=True)
class Core:
    catalog: Catalog
    documents: Documents


class CollectionServicer(pb_grpc.CollectionServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateCollectionResponse:
        info = await self._core.get().catalog.create(request.collection.name, conversions.metric_in(request.collection))
        return pb.CreateCollectionResponse(collection=conversions.collection_out(info))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetCollectionResponse:
        info = await self._core.get().catalog.get(request.name)
        return pb.GetCollectionResponse(collection=conversions.collection_out(info))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCollectionsResponse:
        infos = await self._core.get().catalog.list()
        return pb.ListCollectionsResponse(collections=[conversions.collection_out(info) for info in infos])

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteCollectionResponse:
        await self._core.get().catalog.delete(request.name)
        return pb.DeleteCollectionResponse()


class DocumentServicer(pb_grpc.DocumentServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def IndexDocuments(
        self, request: pb.IndexDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IndexDocumentsResponse:
        documents = [conversions.document_in(message) for message in request.documents]
        outcome = await self._core.get().documents.index(request.collection, documents)
        return conversions.index_outcome_out(outcome)

    async def GetDocuments(
        self, request: pb.GetDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetDocumentsResponse:
        documents, missing = await self._core.get().documents.get(request.collection, list(request.ids))
        return pb.GetDocumentsResponse(documents=[conversions.document_out(d) for d in documents], missing_ids=missing)

    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteDocumentsResponse:
        count = await self._core.get().documents.delete(request.collection, list(request.ids))
        return pb.DeleteDocumentsResponse(deleted_count=count)


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.SearchResponse:
        threshold = finite(request.score_threshold, "score_threshold") if request.HasField("score_threshold") else None
        hits = await self._core.get().documents.search(request.collection, request.query, request.top_k, threshold)
        return pb.SearchResponse(hits=[conversions.hit_out(hit) for hit in hits])
