"""gRPC adapter of the public api: translates meshsearch.api.v1 messages (through
`conversions`); the core does the work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api import conversions
from meshsearch_api.auth.quotas import TenantQuotas
from meshsearch_api.catalog import Catalog
from meshsearch_api.documents import Documents
from meshsearch_api.request_keys import RequestKeys
from meshsearch_common.readiness import Readiness


@dataclass(frozen=True)
class Core:
    catalog: Catalog
    documents: Documents
    request_keys: RequestKeys
    quotas: TenantQuotas


class CollectionServicer(pb_grpc.CollectionServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateCollectionResponse:
        info = await self._core.get().catalog.create(conversions.collection_spec_in(request.collection))
        return pb.CreateCollectionResponse(collection=conversions.collection_out(info))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetCollectionResponse:
        info = await self._core.get().catalog.get(request.name)
        return pb.GetCollectionResponse(collection=conversions.collection_out(info))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCollectionsResponse:
        infos, next_token = await self._core.get().catalog.list(request.page_size, request.page_token)
        return pb.ListCollectionsResponse(
            collections=[conversions.collection_out(info) for info in infos], next_page_token=next_token
        )

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
        core = self._core.get()
        documents = [conversions.document_in(message) for message in request.documents]

        async def index() -> bytes:
            await core.quotas.admit(len(documents), sum(len(d.text.encode()) for d in documents))
            outcome = await core.documents.index(request.collection, documents)
            return conversions.index_outcome_out(outcome).SerializeToString()

        if not request.request_key:
            return pb.IndexDocumentsResponse.FromString(await index())
        answer = await core.request_keys.run(
            request.collection, request.request_key, request.SerializeToString(deterministic=True), index
        )
        return pb.IndexDocumentsResponse.FromString(answer)

    async def GetDocuments(
        self, request: pb.GetDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetDocumentsResponse:
        documents, missing = await self._core.get().documents.get(request.collection, list(request.ids))
        return pb.GetDocumentsResponse(documents=[conversions.document_out(d) for d in documents], missing_ids=missing)

    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteDocumentsResponse:
        filter_wire = request.filter.SerializeToString() if request.HasField("filter") else b""
        count = await self._core.get().documents.delete(request.collection, list(request.ids), filter_wire)
        return pb.DeleteDocumentsResponse(deleted_count=count)

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListDocumentsResponse:
        filter_wire = request.filter.SerializeToString() if request.HasField("filter") else b""
        documents, next_token = await self._core.get().documents.list_page(
            request.collection, request.page_size, request.page_token, filter_wire
        )
        return pb.ListDocumentsResponse(
            documents=[conversions.document_out(d) for d in documents], next_page_token=next_token
        )


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.SearchResponse:
        result = await self._core.get().documents.search(conversions.search_query_in(request))
        return conversions.search_result_out(result)

    async def SearchBatch(
        self, request: pb.SearchBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SearchBatchResponse:
        queries = [conversions.search_query_in(search) for search in request.searches]
        results = await self._core.get().documents.search_batch(queries)
        return pb.SearchBatchResponse(results=[conversions.search_result_out(result) for result in results])
