"""DocumentService: index, get, delete and list documents. A request key makes IndexDocuments
idempotent: a retry with the same key and request gets the first answer again."""

from __future__ import annotations

from typing import Any

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api.conversions import public
from meshsearch_api.core import ApiCore
from meshsearch_common.readiness import Readiness


class DocumentServicer(pb_grpc.DocumentServiceServicer):
    def __init__(self, core: Readiness[ApiCore]) -> None:
        self._core = core

    async def IndexDocuments(
        self, request: pb.IndexDocumentsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IndexDocumentsResponse:
        core = self._core.get()
        documents = [public.document_in(message) for message in request.documents]

        async def index() -> bytes:
            outcome = await core.documents.index(request.collection, documents)
            return public.index_outcome_out(outcome).SerializeToString()

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
        return pb.GetDocumentsResponse(documents=[public.document_out(d) for d in documents], missing_ids=missing)

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
            documents=[public.document_out(d) for d in documents], next_page_token=next_token
        )
