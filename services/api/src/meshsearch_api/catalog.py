"""Catalog: collection lifecycle. A collection is bound at creation to the embedder's model,
so its vectors are never mixed with another model's."""

from __future__ import annotations

from meshsearch_api.auth import principal
from meshsearch_api.auth.quotas import TenantQuotas
from meshsearch_api.chunking import resolve
from meshsearch_api.domain import CollectionInfo, CollectionSpec
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.search_client import SearchClient
from meshsearch_common import names, pages
from meshsearch_common.errors import InvalidArgument, ResourceExhausted


class Catalog:
    def __init__(self, search: SearchClient, embedder: EmbedderClient, quotas: TenantQuotas | None = None) -> None:
        self._search = search
        self._embedder = embedder
        self._quotas = quotas

    async def create(self, spec: CollectionSpec) -> CollectionInfo:
        """Create the collection with its chunking resolved against the model's window now,
        so a later model with another window does not change how it splits documents."""
        if not spec.name:
            raise InvalidArgument("collection.name is required", field="collection.name")
        limit = self._quotas.max_collections() if self._quotas is not None else 0
        if limit:
            held = len(await self._search.list_collections(limit=limit, counts=False))
            if held >= limit:  # soft: creations racing each other may pass it by their number
                raise ResourceExhausted(
                    f"this tenant already has {held} collections, its limit; delete one first",
                    reason="TOO_MANY_COLLECTIONS",
                    quota_subject=f"tenant:{principal.tenant()}:collections",
                )
        model = await self._embedder.model()
        chunking = resolve(spec.chunking, await self._embedder.window_tokens())
        return await self._search.create_collection(spec, chunking, model)

    async def get(self, name: str) -> CollectionInfo:
        if not name:
            raise InvalidArgument("name is required", field="name")
        return await self._search.get_collection(name)

    async def list(self, page_size: int, page_token: str) -> tuple[list[CollectionInfo], str]:
        """One page of collections in name order, and the next page's token ("" at the end).
        The token is the last name returned, encoded; collections created or dropped between
        pages neither repeat nor shift the ones after it."""
        size = pages.checked_size(page_size)
        after = pages.decode(page_token, "page_token") if page_token else ""
        if after and not names.COLLECTION_NAME.match(after):
            raise InvalidArgument("page_token was not issued by ListCollections", field="page_token")
        remaining = await self._search.list_collections(after=after, limit=size + 1)
        page = remaining[:size]
        return page, pages.encode(page[-1].name) if len(remaining) > size else ""

    async def delete(self, name: str) -> None:
        if not name:
            raise InvalidArgument("name is required", field="name")
        await self._search.delete_collection(name)
