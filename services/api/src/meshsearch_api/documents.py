"""Documents: embed-and-store, fetch, delete and search."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from meshsearch.search.v1 import search_pb2 as spb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_api import search_client
from meshsearch_api.domain import Document, DocumentError, Hit, IndexOutcome
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_common import vectors
from meshsearch_common.client import Upstream
from meshsearch_common.errors import InvalidArgument

MAX_ID_CHARS = 256


@dataclass(frozen=True)
class DocumentLimits:
    max_documents_per_request: int
    max_text_bytes: int
    max_top_k: int
    default_top_k: int


class Documents:
    def __init__(self, search: Upstream, embedder: EmbedderClient, limits: DocumentLimits) -> None:
        self._search = search
        self._stub = search_pb2_grpc.VectorStoreServiceStub(search.channel)
        self._embedder = embedder
        self._limits = limits

    def _require_collection(self, name: str) -> None:
        if not name:
            raise InvalidArgument("collection is required")

    def _problem(self, document: Document) -> str | None:
        if not 1 <= len(document.id) <= MAX_ID_CHARS:
            return f"id must be 1 to {MAX_ID_CHARS} characters"
        if not document.text.strip():
            return "text is empty; every document needs non-whitespace text"
        if len(document.text.encode("utf-8")) > self._limits.max_text_bytes:
            return f"text exceeds the limit of {self._limits.max_text_bytes} bytes"
        if "\x00" in document.text or "\x00" in document.id:
            return "id and text must not contain NUL characters"
        return None

    async def index(self, collection: str, documents: list[Document]) -> IndexOutcome:
        """Embed and upsert valid documents; report invalid ones per item without storing them."""
        self._require_collection(collection)
        if not documents:
            raise InvalidArgument("documents must contain at least one document")
        if len(documents) > self._limits.max_documents_per_request:
            raise InvalidArgument(
                f"{len(documents)} documents exceed the limit of {self._limits.max_documents_per_request} "
                "per IndexDocuments call; split the batch"
            )
        errors: list[DocumentError] = []
        valid: list[tuple[int, Document]] = []
        for index, document in enumerate(documents):
            problem = self._problem(document)
            if problem:
                errors.append(DocumentError(index, document.id, grpc.StatusCode.INVALID_ARGUMENT, problem))
            else:
                valid.append((index, document))
        if not valid:
            return IndexOutcome(0, errors)
        # Fail on an unknown collection before spending model time on its documents.
        await self._search.call(self._stub.GetCollection, spb.GetCollectionRequest(name=collection))
        embedded = await self._embedder.embed([document.text for _, document in valid])
        model = embedded.model
        request = spb.UpsertRequest(
            collection=collection,
            points=[
                spb.Point(
                    id=document.id,
                    vector=spb.Vector(data=vectors.pack(row), dimension=model.dimension),
                    text=document.text,
                    metadata=search_client.struct(document.metadata),
                )
                for (_, document), row in zip(valid, embedded.vectors, strict=True)
            ],
            model=spb.EmbeddingModel(id=model.id, revision=model.revision, dimension=model.dimension, normalized=True),
        )
        response = await self._search.call(self._stub.Upsert, request)
        for item in response.errors:
            original_index, document = valid[item.index]
            errors.append(DocumentError(original_index, document.id, grpc.StatusCode.INVALID_ARGUMENT, item.message))
        return IndexOutcome(response.upserted_count, sorted(errors, key=lambda error: error.index), embedded.queue_s)

    async def get(self, collection: str, ids: list[str]) -> tuple[list[Document], list[str]]:
        self._require_collection(collection)
        if not ids:
            raise InvalidArgument("ids must contain at least one id")
        response = await self._search.call(self._stub.Get, spb.GetRequest(collection=collection, ids=ids))
        return [search_client.document(point) for point in response.points], list(response.missing_ids)

    async def delete(self, collection: str, ids: list[str]) -> int:
        self._require_collection(collection)
        if not ids:
            raise InvalidArgument("ids must contain at least one id")
        response = await self._search.call(self._stub.Delete, spb.DeleteRequest(collection=collection, ids=ids))
        return response.deleted_count

    async def search(self, collection: str, query: str, top_k: int, score_threshold: float | None) -> list[Hit]:
        self._require_collection(collection)
        if not query.strip():
            raise InvalidArgument("query is empty; send the text to search for")
        if len(query.encode("utf-8")) > self._limits.max_text_bytes:
            raise InvalidArgument(f"query exceeds the limit of {self._limits.max_text_bytes} bytes")
        k = top_k or self._limits.default_top_k
        if k > self._limits.max_top_k:
            raise InvalidArgument(f"top_k {k} exceeds the limit of {self._limits.max_top_k}")
        self._search.fail_fast_if_open()  # no model time for a query that could not be run
        embedded = await self._embedder.embed([query])
        model = embedded.model
        request = spb.QueryRequest(
            collection=collection,
            vector=spb.Vector(data=vectors.pack(embedded.vectors[0]), dimension=model.dimension),
            k=k,
            model=spb.EmbeddingModel(id=model.id, revision=model.revision, dimension=model.dimension, normalized=True),
        )
        if score_threshold is not None:
            request.score_threshold = score_threshold
        response = await self._search.call(self._stub.Query, request)
        return [Hit(search_client.document(hit.point), hit.score) for hit in response.points]
