"""Catalog: collection lifecycle. A collection is bound at creation to the embedder's model,
so its vectors are never mixed with another model's."""

from __future__ import annotations

from meshsearch_api.domain import CollectionInfo
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.search_client import SearchClient
from meshsearch_common.errors import InvalidArgument
from meshsearch_common.vectors import Metric


class Catalog:
    def __init__(self, search: SearchClient, embedder: EmbedderClient) -> None:
        self._search = search
        self._embedder = embedder

    async def create(self, name: str, metric: Metric) -> CollectionInfo:
        if not name:
            raise InvalidArgument("collection.name is required")
        return await self._search.create_collection(name, metric, await self._embedder.model())

    async def get(self, name: str) -> CollectionInfo:
        if not name:
            raise InvalidArgument("name is required")
        return await self._search.get_collection(name)

    async def list(self) -> list[CollectionInfo]:
        return await self._search.list_collections()

    async def delete(self, name: str) -> None:
        if not name:
            raise InvalidArgument("name is required")
        await self._search.delete_collection(name)
