"""Catalog: collection lifecycle. A collection is bound at creation to the embedder's model,
so its vectors are never mixed with another model's."""

from __future__ import annotations

from meshsearch.search.v1 import search_pb2 as spb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_api import search_client
from meshsearch_api.domain import CollectionInfo
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_common.client import Upstream
from meshsearch_common.errors import InvalidArgument


class Catalog:
    def __init__(self, search: Upstream, embedder: EmbedderClient) -> None:
        self._search = search
        self._stub = search_pb2_grpc.VectorStoreServiceStub(search.channel)
        self._embedder = embedder

    async def create(self, name: str, metric: str) -> CollectionInfo:
        if not name:
            raise InvalidArgument("collection.name is required")
        model = await self._embedder.model()
        request = spb.CreateCollectionRequest(
            collection=spb.Collection(
                name=name,
                dimension=model.dimension,
                metric=search_client.METRIC_VALUES[metric],
                model=spb.EmbeddingModel(
                    id=model.id, revision=model.revision, dimension=model.dimension, normalized=True
                ),
            )
        )
        response = await self._search.call(self._stub.CreateCollection, request)
        return search_client.collection_info(response.collection)

    async def get(self, name: str) -> CollectionInfo:
        if not name:
            raise InvalidArgument("name is required")
        response = await self._search.call(self._stub.GetCollection, spb.GetCollectionRequest(name=name))
        return search_client.collection_info(response.collection)

    async def list(self) -> list[CollectionInfo]:
        response = await self._search.call(self._stub.ListCollections, spb.ListCollectionsRequest())
        return [search_client.collection_info(c) for c in response.collections]

    async def delete(self, name: str) -> None:
        if not name:
            raise InvalidArgument("name is required")
        await self._search.call(self._stub.DeleteCollection, spb.DeleteCollectionRequest(name=name))
