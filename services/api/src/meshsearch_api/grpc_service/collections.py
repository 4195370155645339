"""CollectionService: create, get, list and delete collections."""

from __future__ import annotations

from typing import Any

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api.conversions import public
from meshsearch_api.core import ApiCore
from meshsearch_common.readiness import Readiness


class CollectionServicer(pb_grpc.CollectionServiceServicer):
    def __init__(self, core: Readiness[ApiCore]) -> None:
        self._core = core

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateCollectionResponse:
        info = await self._core.get().catalog.create(public.collection_spec_in(request.collection))
        return pb.CreateCollectionResponse(collection=public.collection_out(info))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetCollectionResponse:
        info = await self._core.get().catalog.get(request.name)
        return pb.GetCollectionResponse(collection=public.collection_out(info))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCollectionsResponse:
        infos, next_token = await self._core.get().catalog.list(request.page_size, request.page_token)
        return pb.ListCollectionsResponse(
            collections=[public.collection_out(info) for info in infos], next_page_token=next_token
        )

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.DeleteCollectionResponse:
        await self._core.get().catalog.delete(request.name)
        return pb.DeleteCollectionResponse()
