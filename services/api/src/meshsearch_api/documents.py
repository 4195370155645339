"""Documents: embed-and-store, fetch, delete and search."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from meshsearch_api.domain import Document, DocumentError, Hit, IndexOutcome
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.search_client import SearchClient
from meshsearch_common.errors import InvalidArgument

MAX_ID_CHARS = 256


@dataclass(frozen=True)
class DocumentLimits:
    max_documents_per_request: int
    max_text_bytes: int
    max_top_k: int
    default_top_k: int


class Documents:
    def __init__(self, search: SearchClient, embedder: EmbedderClient, limits: DocumentLimits) -> None:
        self._search = search
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
        await self._search.get_collection(collection)
        embedded = await self._embedder.embed([document.text for _, document in valid])
        result = await self._search.upsert(
            collection, [document for _, document in valid], embedded.vectors, embedded.model
        )
        for position, message in result.rejected:
            original_index, document = valid[position]
            errors.append(DocumentError(original_index, document.id, grpc.StatusCode.INVALID_ARGUMENT, message))
        return IndexOutcome(
            result.upserted_count,
            sorted(errors, key=lambda error: error.index),
            embedded.queue_s,
            embedded.backlog_s,
        )

    async def get(self, collection: str, ids: list[str]) -> tuple[list[Document], list[str]]:
        self._require_collection(collection)
        if not ids:
            raise InvalidArgument("ids must contain at least one id")
        return await self._search.get(collection, ids)

    async def delete(self, collection: str, ids: list[str]) -> int:
        self._require_collection(collection)
        if not ids:
            raise InvalidArgument("ids must contain at least one id")
        return await self._search.delete(collection, ids)

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
        return await self._search.query(collection, embedded.vectors[0], embedded.model, k, score_threshold)
