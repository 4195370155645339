"""SearchClient: the api's one door to the search service, as EmbedderClient is to the embedder.

It owns the stub, builds every request (through `conversions`), and returns plain types; the
client layer under it (`meshsearch_common.client`) adds deadlines, retries and the breaker.

It is also where tenants are kept apart: every collection name it is given is the current
tenant's (`auth.principal`), sent as that tenant's stored name, and every name that comes back
(in a collection, or in an error message) is turned back into the tenant's own. Another
tenant's collections are never listed and cannot be named.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from meshsearch.search.v1 import search_pb2 as spb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_api.auth import principal
from meshsearch_api.chunking import EmbeddedBatch
from meshsearch_api.conversions import search_service
from meshsearch_api.domain import (
    Chunking,
    CollectionInfo,
    CollectionSpec,
    Document,
    ModelIdentity,
    Ranked,
    SearchQuery,
)
from meshsearch_common import names, vectors
from meshsearch_common.client import Upstream
from meshsearch_common.errors import MeshError

ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True)
class UpsertResult:
    upserted_count: int
    rejected: list[tuple[int, str]]  # (position in the request, why the search service refused it)
    already_applied: bool = False  # the receipt was recorded before: nothing was written


class SearchClient:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._stub = search_pb2_grpc.VectorStoreServiceStub(upstream.channel)

    def fail_fast_if_open(self) -> None:
        """UNAVAILABLE at once while the search service's breaker rejects calls."""
        self._upstream.fail_fast_if_open()

    async def _call(self, rpc: Callable[[Any], Awaitable[ResponseT]], request: Any, collection: str = "") -> ResponseT:
        """One call about `collection` (its public name), whose errors speak of that name
        rather than the stored one."""
        try:
            return await self._upstream.call(rpc, request)
        except MeshError as exc:
            stored = principal.stored_collection(collection) if collection else ""
            if stored and stored != collection:
                exc.message = exc.message.replace(f"'{stored}'", f"'{collection}'")
                exc.args = (exc.message,)
            raise

    @staticmethod
    def _public(info: CollectionInfo) -> CollectionInfo:
        name = principal.public_collection(info.name)
        return info if name == info.name or name is None else replace(info, name=name)

    async def create_collection(self, spec: CollectionSpec, chunking: Chunking, model: ModelIdentity) -> CollectionInfo:
        collection = spb.Collection(
            name=principal.stored_collection(spec.name, "collection.name"),
            dimension=model.dimension,
            metric=vectors.metric_to_wire(spb.Metric, spec.metric),
            storage=spb.STORAGE_FLOAT16 if spec.half_precision else spb.STORAGE_FLOAT32,
            hnsw=spb.HnswParams(m=spec.hnsw_m, ef_construction=spec.hnsw_ef_construction),
            model=search_service.model_to_search(model),
            chunk_tokens=chunking.chunk_tokens,
            chunk_overlap_tokens=chunking.overlap_tokens,
            chunk_truncate=chunking.truncate,
            mixed_numerics=spec.mixed_numerics,
            shards=spec.shards,
        )
        response = await self._call(
            self._stub.CreateCollection, spb.CreateCollectionRequest(collection=collection), spec.name
        )
        return self._public(search_service.collection_from_search(response.collection))

    async def get_collection(self, name: str) -> CollectionInfo:
        request = spb.GetCollectionRequest(name=principal.stored_collection(name, "name"))
        response = await self._call(self._stub.GetCollection, request, name)
        return self._public(search_service.collection_from_search(response.collection))

    async def list_collections(self, after: str = "", limit: int = 0, counts: bool = True) -> list[CollectionInfo]:
        """The current tenant's collections named after `after` (a public name), at most
        `limit` (0: all), with their document counts when `counts`. The search service selects
        them, so no other tenant's collection is read or counted."""
        namespace = principal.stored_namespace()
        stored_after = (f"{namespace}{names.TENANT_SEPARATOR}" if namespace else "") + after if after else ""
        request = spb.ListCollectionsRequest(tenant=namespace, after=stored_after, limit=limit, skip_counts=not counts)
        response = await self._upstream.call(self._stub.ListCollections, request)
        infos = [search_service.collection_from_search(c) for c in response.collections]
        return [self._public(info) for info in infos if principal.public_collection(info.name) is not None]

    async def delete_collection(self, name: str) -> None:
        request = spb.DeleteCollectionRequest(name=principal.stored_collection(name, "name"))
        await self._call(self._stub.DeleteCollection, request, name)

    async def upsert(self, collection: str, batch: EmbeddedBatch, receipt: str = "") -> UpsertResult:
        """Store `batch`; with a receipt, at most once (see the search service's receipts)."""
        request = spb.UpsertRequest(
            collection=principal.stored_collection(collection),
            points=[search_service.point_to_search(item, batch.model.dimension) for item in batch.documents],
            model=search_service.model_to_search(batch.model),
            receipt=receipt,
        )
        response = await self._call(self._stub.Upsert, request, collection)
        return UpsertResult(
            response.upserted_count, [(item.index, item.message) for item in response.errors], response.already_applied
        )

    async def recorded_receipts(self, collection: str, receipts: list[str]) -> list[str]:
        request = spb.GetReceiptsRequest(collection=principal.stored_collection(collection), receipts=receipts)
        return list((await self._call(self._stub.GetReceipts, request, collection)).recorded)

    async def delete_receipts(self, collection: str, prefix: str) -> int:
        request = spb.DeleteReceiptsRequest(collection=principal.stored_collection(collection), prefix=prefix)
        return int((await self._call(self._stub.DeleteReceipts, request, collection)).deleted_count)

    async def defer_index(self, collection: str, lease_s: float) -> bool:
        """Hold off the collection's HNSW index for `lease_s` while loading it, or renew the
        deferral; False when the collection already holds points (see index_keeper)."""
        request = spb.DeferIndexRequest(collection=principal.stored_collection(collection))
        request.lease.FromTimedelta(timedelta(seconds=lease_s))
        return bool((await self._call(self._stub.DeferIndex, request, collection)).deferred)

    async def build_index(self, collection: str) -> None:
        """End a deferral: the collection's index is built in the background."""
        request = spb.BuildIndexRequest(collection=principal.stored_collection(collection))
        await self._call(self._stub.BuildIndex, request, collection)

    async def get(self, collection: str, ids: list[str]) -> tuple[list[Document], list[str]]:
        request = spb.GetRequest(collection=principal.stored_collection(collection), ids=ids)
        response = await self._call(self._stub.Get, request, collection)
        return [search_service.document_from_search(p) for p in response.points], list(response.missing_ids)

    async def delete(self, collection: str, ids: list[str], filter_wire: bytes = b"") -> int:
        stored = principal.stored_collection(collection)
        request = spb.DeleteRequest(collection=stored, ids=ids, filter=search_service.filter_to_search(filter_wire))
        response = await self._call(self._stub.Delete, request, collection)
        return int(response.deleted_count)

    async def scroll(self, collection: str, filter_wire: bytes, limit: int, cursor: str) -> tuple[list[Document], str]:
        request = spb.ScrollRequest(
            collection=principal.stored_collection(collection),
            filter=search_service.filter_to_search(filter_wire),
            limit=limit,
            cursor=cursor,
        )
        response = await self._call(self._stub.Scroll, request, collection)
        return [search_service.document_from_search(p) for p in response.points], response.next_cursor

    async def query(
        self,
        query: SearchQuery,
        k: int,
        vector: npt.NDArray[np.float32] | None = None,
        model: ModelIdentity | None = None,
    ) -> Ranked:
        """Vector search (`vector` given, mode vector), hybrid (`vector` given, mode hybrid) or
        keyword search (no vector)."""
        stored = replace(query, collection=principal.stored_collection(query.collection))
        request = search_service.query_to_search(stored, k, vector, model)
        response = await self._call(self._stub.Query, request, query.collection)
        return Ranked(
            [search_service.hit_from_search(hit) for hit in response.points], tuple(response.unavailable_shards)
        )
