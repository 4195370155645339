"""Small helpers for talking to the running stack in tests."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc


@dataclass
class ApiClient:
    channel: grpc.aio.Channel

    @property
    def collections(self) -> pb_grpc.CollectionServiceStub:
        return pb_grpc.CollectionServiceStub(self.channel)

    @property
    def documents(self) -> pb_grpc.DocumentServiceStub:
        return pb_grpc.DocumentServiceStub(self.channel)

    @property
    def search(self) -> pb_grpc.SearchServiceStub:
        return pb_grpc.SearchServiceStub(self.channel)

    async def create(self, name: str) -> pb.Collection:
        response = await self.collections.CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30
        )
        return response.collection

    async def index(self, collection: str, documents: dict[str, str]) -> pb.IndexDocumentsResponse:
        request = pb.IndexDocumentsRequest(
            collection=collection, documents=[pb.Document(id=i, text=t) for i, t in documents.items()]
        )
        return await self.documents.IndexDocuments(request, timeout=60)

    async def query(self, collection: str, query: str, top_k: int = 3) -> list[pb.SearchHit]:
        response = await self.search.Search(
            pb.SearchRequest(collection=collection, query=query, top_k=top_k), timeout=30
        )
        return list(response.hits)


async def status_of(call) -> grpc.StatusCode:
    """The status code a call ends with (OK when it succeeds)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK
