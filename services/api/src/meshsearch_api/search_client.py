"""SearchClient: the api's one door to the search service, as EmbedderClient is to the embedder.

It owns the stub, builds every request (through `conversions`), and returns plain types; the
client layer under it (`meshsearch_common.client`) adds deadlines, retries and the breaker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meshsearch.search.v1 import search_pb2 as spb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_api import conversions
from meshsearch_api.chunking import EmbeddedBatch
from meshsearch_api.domain import Chunking, CollectionInfo, CollectionSpec, Document, Hit, ModelIdentity, SearchQuery
from meshsearch_common import vectors
from meshsearch_common.client import Upstream


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

    async def create_collection(self, spec: CollectionSpec, chunking: Chunking, model: ModelIdentity) -> CollectionInfo:
        collection = spb.Collection(
            name=spec.name,
            dimension=model.dimension,
            metric=vectors.metric_to_wire(spb.Metric, spec.metric),
            storage=spb.STORAGE_FLOAT16 if spec.half_precision else spb.STORAGE_FLOAT32,
            hnsw=spb.HnswParams(m=spec.hnsw_m, ef_construction=spec.hnsw_ef_construction),
            model=conversions.model_to_search(model),
            chunk_tokens=chunking.chunk_tokens,
            chunk_overlap_tokens=chunking.overlap_tokens,
            chunk_truncate=chunking.truncate,
            mixed_numerics=spec.mixed_numerics,
        )
        response = await self._upstream.call(
            self._stub.CreateCollection, spb.CreateCollectionRequest(collection=collection)
        )
        return conversions.collection_from_search(response.collection)

    async def get_collection(self, name: str) -> CollectionInfo:
        response = await self._upstream.call(self._stub.GetCollection, spb.GetCollectionRequest(name=name))
        return conversions.collection_from_search(response.collection)

    async def list_collections(self) -> list[CollectionInfo]:
        response = await self._upstream.call(self._stub.ListCollections, spb.ListCollectionsRequest())
        return [conversions.collection_from_search(c) for c in response.collections]

    async def delete_collection(self, name: str) -> None:
        await self._upstream.call(self._stub.DeleteCollection, spb.DeleteCollectionRequest(name=name))

    async def upsert(self, collection: str, batch: EmbeddedBatch, receipt: str = "") -> UpsertResult:
        """Store `batch`; with a receipt, at most once (see the search service's receipts)."""
        request = spb.UpsertRequest(
            collection=collection,
            points=[conversions.point_to_search(item, batch.model.dimension) for item in batch.documents],
            model=conversions.model_to_search(batch.model),
            receipt=receipt,
        )
        response = await self._upstream.call(self._stub.Upsert, request)
        return UpsertResult(
            response.upserted_count, [(item.index, item.message) for item in response.errors], response.already_applied
        )

    async def recorded_receipts(self, collection: str, receipts: list[str]) -> list[str]:
        request = spb.GetReceiptsRequest(collection=collection, receipts=receipts)
        return list((await self._upstream.call(self._stub.GetReceipts, request)).recorded)

    async def delete_receipts(self, collection: str, prefix: str) -> int:
        request = spb.DeleteReceiptsRequest(collection=collection, prefix=prefix)
        return int((await self._upstream.call(self._stub.DeleteReceipts, request)).deleted_count)

    async def get(self, collection: str, ids: list[str]) -> tuple[list[Document], list[str]]:
        response = await self._upstream.call(self._stub.Get, spb.GetRequest(collection=collection, ids=ids))
        return [conversions.document_from_search(p) for p in response.points], list(response.missing_ids)

    async def delete(self, collection: str, ids: list[str], filter_wire: bytes = b"") -> int:
        request = spb.DeleteRequest(collection=collection, ids=ids, filter=conversions.filter_to_search(filter_wire))
        response = await self._upstream.call(self._stub.Delete, request)
        return int(response.deleted_count)

    async def scroll(self, collection: str, filter_wire: bytes, limit: int, cursor: str) -> tuple[list[Document], str]:
        request = spb.ScrollRequest(
            collection=collection, filter=conversions.filter_to_search(filter_wire), limit=limit, cursor=cursor
        )
        response = await self._upstream.call(self._stub.Scroll, request)
        return [conversions.document_from_search(p) for p in response.points], response.next_cursor

    async def query(
        self,
        query: SearchQuery,
        k: int,
        vector: npt.NDArray[np.float32] | None = None,
        model: ModelIdentity | None = None,
    ) -> list[Hit]:
        """Vector search (`vector` given, mode vector), hybrid (`vector` given, mode hybrid) or
        keyword search (no vector)."""
        request = conversions.query_to_search(query, k, vector, model)
        response = await self._upstream.call(self._stub.Query, request)
        return [conversions.hit_from_search(hit) for hit in response.points]
