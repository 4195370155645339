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
from meshsearch_api.domain import CollectionInfo, Document, Hit, ModelIdentity
from meshsearch_common import vectors
from meshsearch_common.client import Upstream
from meshsearch_common.vectors import Metric


@dataclass(frozen=True)
class UpsertResult:
    upserted_count: int
    rejected: list[tuple[int, str]]  # (position in the request, why the search service refused it)


class SearchClient:
    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._stub = search_pb2_grpc.VectorStoreServiceStub(upstream.channel)

    def fail_fast_if_open(self) -> None:
        """UNAVAILABLE at once while the search service's breaker rejects calls."""
        self._upstream.fail_fast_if_open()

    async def create_collection(self, name: str, metric: Metric, model: ModelIdentity) -> CollectionInfo:
        collection = spb.Collection(
            name=name,
            dimension=model.dimension,
            metric=vectors.metric_to_wire(spb.Metric, metric),
            model=conversions.model_to_search(model),
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

    async def upsert(
        self, collection: str, documents: list[Document], embeddings: npt.NDArray[np.float32], model: ModelIdentity
    ) -> UpsertResult:
        request = spb.UpsertRequest(
            collection=collection,
            points=[
                conversions.point_to_search(document, row, model.dimension)
                for document, row in zip(documents, embeddings, strict=True)
            ],
            model=conversions.model_to_search(model),
        )
        response = await self._upstream.call(self._stub.Upsert, request)
        return UpsertResult(response.upserted_count, [(item.index, item.message) for item in response.errors])

    async def get(self, collection: str, ids: list[str]) -> tuple[list[Document], list[str]]:
        response = await self._upstream.call(self._stub.Get, spb.GetRequest(collection=collection, ids=ids))
        return [conversions.document_from_search(p) for p in response.points], list(response.missing_ids)

    async def delete(self, collection: str, ids: list[str]) -> int:
        response = await self._upstream.call(self._stub.Delete, spb.DeleteRequest(collection=collection, ids=ids))
        return int(response.deleted_count)

    async def query(
        self,
        collection: str,
        vector: npt.NDArray[np.float32],
        model: ModelIdentity,
        k: int,
        score_threshold: float | None,
    ) -> list[Hit]:
        request = spb.QueryRequest(
            collection=collection,
            vector=spb.Vector(data=vectors.pack(vector), dimension=model.dimension),
            k=k,
            model=conversions.model_to_search(model),
        )
        if score_threshold is not None:
            request.score_threshold = score_threshold
        response = await self._upstream.call(self._stub.Query, request)
        return [Hit(conversions.document_from_search(hit.point), hit.score) for hit in response.points]
