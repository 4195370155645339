"""Documents: embed-and-store (within the tenant's quotas), fetch, list and delete. Searches are
`searches.Searches`."""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc

from meshsearch_api.auth.quotas import TenantQuotas
from meshsearch_api.chunking import embed_documents, resolve
from meshsearch_api.domain import Document, DocumentError, IndexOutcome, LimitViolation
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.search_client import SearchClient
from meshsearch_common import pages
from meshsearch_common.errors import (
    InvalidArgument,
)
from meshsearch_common.identifiers import MAX_DOCUMENT_ID_CHARS, document_id_problem


def document_problem(document: Document, max_text_bytes: int) -> LimitViolation | None:
    """The same rules for IndexDocuments, uploads and their estimates."""
    id_problem = document_id_problem(document.id)
    if id_problem:
        too_long_or_empty = not 1 <= len(document.id) <= MAX_DOCUMENT_ID_CHARS
        return LimitViolation("id_length" if too_long_or_empty else "nul_characters", id_problem)
    if not document.text.strip():
        return LimitViolation("empty_text", "text is empty; every document needs non-whitespace text")
    if len(document.text.encode("utf-8")) > max_text_bytes:
        return LimitViolation("max_text_bytes", f"text exceeds the limit of {max_text_bytes} bytes")
    if "\x00" in document.text:
        return LimitViolation("nul_characters", "text must not contain NUL characters")
    if "\\u0000" in json.dumps(document.metadata):
        return LimitViolation("nul_characters", "metadata must not contain NUL characters")
    return None


@dataclass(frozen=True)
class DocumentLimits:
    max_documents_per_request: int
    max_text_bytes: int


class Documents:
    def __init__(
        self, search: SearchClient, embedder: EmbedderClient, quotas: TenantQuotas, limits: DocumentLimits
    ) -> None:
        self._search = search
        self._embedder = embedder
        self._quotas = quotas
        self._limits = limits

    def _require_collection(self, name: str) -> None:
        if not name:
            raise InvalidArgument("collection is required", field="collection")

    async def index(self, collection: str, documents: list[Document]) -> IndexOutcome:
        """Embed (chunk by chunk when long) and upsert valid documents; report invalid ones per
        item without storing them. Every document counts against the tenant's quotas, first."""
        await self._quotas.charge(len(documents), sum(len(d.text.encode()) for d in documents))
        self._require_collection(collection)
        if not documents:
            raise InvalidArgument("documents must contain at least one document", field="documents")
        if len(documents) > self._limits.max_documents_per_request:
            raise InvalidArgument(
                f"{len(documents)} documents exceed the limit of {self._limits.max_documents_per_request} "
                "per IndexDocuments call; split the batch",
                field="documents",
            )
        errors: list[DocumentError] = []
        valid: list[tuple[int, Document]] = []
        for index, document in enumerate(documents):
            problem = document_problem(document, self._limits.max_text_bytes)
            if problem:
                errors.append(DocumentError(index, document.id, grpc.StatusCode.INVALID_ARGUMENT, problem.description))
            else:
                valid.append((index, document))
        if not valid:
            return IndexOutcome(0, errors)
        # Fail on an unknown collection before spending model time on its documents.
        info = await self._search.get_collection(collection)
        chunking = resolve(info.chunking, await self._embedder.window_tokens())
        embedded = await embed_documents(self._embedder, [document for _, document in valid], chunking)
        result = await self._search.upsert(collection, embedded)
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
            raise InvalidArgument("ids must contain at least one id", field="ids")
        return await self._search.get(collection, ids)

    async def delete(self, collection: str, ids: list[str], filter_wire: bytes = b"") -> int:
        """Delete by ids, or every document matching a non-empty filter (one or the other)."""
        self._require_collection(collection)
        if bool(ids) == bool(filter_wire):
            raise InvalidArgument("give either ids or a non-empty filter of documents to delete", field="ids")
        return await self._search.delete(collection, ids, filter_wire)

    async def list_page(
        self, collection: str, page_size: int, page_token: str, filter_wire: bytes
    ) -> tuple[list[Document], str]:
        self._require_collection(collection)
        size = pages.checked_size(page_size)
        if page_token:
            pages.decode(page_token, "page_token")  # the search service's cursor, in the same encoding
        return await self._search.scroll(collection, filter_wire, size, page_token)
