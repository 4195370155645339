"""Documents: embed-and-store, fetch, list, delete and search (with degraded mode)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import NamedTuple

import grpc
from prometheus_client import Counter

from meshsearch_api.chunking import embed_documents, resolve
from meshsearch_api.domain import Document, DocumentError, IndexOutcome, SearchMode, SearchQuery, SearchResult
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.search_client import SearchClient
from meshsearch_common import context, pages
from meshsearch_common.errors import (
    CALLER_ERRORS,
    DeadlineExceeded,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from meshsearch_common.identifiers import MAX_DOCUMENT_ID_CHARS, document_id_problem

# Share of a search's remaining time the query's embedding may take when keyword search could
# answer instead: the rest is kept for the fallback, so a frozen embedder degrades the answer
# instead of timing out the call.
EMBED_SHARE_WHEN_DEGRADABLE = 0.5
CALLER_ERROR_TYPES = tuple(CALLER_ERRORS.values())

DEGRADED_SEARCHES = Counter(
    "meshsearch_api_degraded_searches_total",
    "Vector or hybrid searches answered by keyword search because the embedder could not embed the query.",
    ["cause"],
)


class Problem(NamedTuple):
    """Why a document cannot be indexed: the limit it breaks, and a message saying how to fix it."""

    limit: str
    message: str


def document_problem(document: Document, max_text_bytes: int) -> Problem | None:
    """The same rules for IndexDocuments, uploads and their estimates."""
    id_problem = document_id_problem(document.id)
    if id_problem:
        too_long_or_empty = not 1 <= len(document.id) <= MAX_DOCUMENT_ID_CHARS
        return Problem("id_length" if too_long_or_empty else "nul_characters", id_problem)
    if not document.text.strip():
        return Problem("empty_text", "text is empty; every document needs non-whitespace text")
    if len(document.text.encode("utf-8")) > max_text_bytes:
        return Problem("max_text_bytes", f"text exceeds the limit of {max_text_bytes} bytes")
    if "\x00" in document.text:
        return Problem("nul_characters", "text must not contain NUL characters")
    if "\\u0000" in json.dumps(document.metadata):
        return Problem("nul_characters", "metadata must not contain NUL characters")
    return None


@dataclass(frozen=True)
class DocumentLimits:
    max_documents_per_request: int
    max_text_bytes: int
    max_top_k: int
    default_top_k: int
    max_searches_per_batch: int


class Documents:
    def __init__(self, search: SearchClient, embedder: EmbedderClient, limits: DocumentLimits) -> None:
        self._search = search
        self._embedder = embedder
        self._limits = limits

    def _require_collection(self, name: str) -> None:
        if not name:
            raise InvalidArgument("collection is required", field="collection")

    async def index(self, collection: str, documents: list[Document]) -> IndexOutcome:
        """Embed (chunk by chunk when long) and upsert valid documents; report invalid ones per
        item without storing them."""
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
                errors.append(DocumentError(index, document.id, grpc.StatusCode.INVALID_ARGUMENT, problem.message))
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

    def _check_search(self, query: SearchQuery, field_prefix: str = "") -> int:
        """The number of results to fetch; INVALID_ARGUMENT naming the field otherwise."""
        if not query.collection:
            raise InvalidArgument("collection is required", field=f"{field_prefix}collection")
        if not query.text.strip():
            raise InvalidArgument("query is empty; send the text to search for", field=f"{field_prefix}query")
        if len(query.text.encode("utf-8")) > self._limits.max_text_bytes:
            raise InvalidArgument(
                f"query exceeds the limit of {self._limits.max_text_bytes} bytes", field=f"{field_prefix}query"
            )
        k = query.top_k or self._limits.default_top_k
        if k > self._limits.max_top_k:
            raise InvalidArgument(
                f"top_k {k} exceeds the limit of {self._limits.max_top_k}", field=f"{field_prefix}top_k"
            )
        return k

    async def search(self, query: SearchQuery, field_prefix: str = "") -> SearchResult:
        """Documents best answering `query` in its mode. Vector and hybrid searches need the
        query's embedding; when the embedder cannot give one in time (down, breaker open,
        overloaded, frozen) keyword search answers instead, marked degraded, rather than
        failing: the embedder gets at most EMBED_SHARE_WHEN_DEGRADABLE of the time left, so
        the fallback always has time to run."""
        k = self._check_search(query, field_prefix)
        if query.mode is SearchMode.KEYWORD:
            return SearchResult(await self._search.query(query, k), SearchMode.KEYWORD)
        self._search.fail_fast_if_open()  # no model time for a query that could not be run
        remaining = context.remaining_seconds()
        try:
            embedded = await self._embedder.embed(
                [query.text], timeout_s=None if remaining is None else remaining * EMBED_SHARE_WHEN_DEGRADABLE
            )
        except (Unavailable, DeadlineExceeded, ResourceExhausted) as exc:
            DEGRADED_SEARCHES.labels(type(exc).__name__).inc()
            reason = f"answered by keyword search: the query could not be embedded ({exc.message})"
            return SearchResult(await self._search.query(query, k), SearchMode.KEYWORD, reason)
        hits = await self._search.query(query, k, embedded.vectors[0], embedded.model)
        return SearchResult(hits, query.mode)

    async def search_batch(self, queries: list[SearchQuery]) -> list[SearchResult]:
        """Several searches at once, in request order; the first invalid one (by position)
        fails the call, naming its index. They run concurrently: the embedder batches them."""
        if not queries:
            raise InvalidArgument("searches must contain at least one search", field="searches")
        if len(queries) > self._limits.max_searches_per_batch:
            raise InvalidArgument(
                f"{len(queries)} searches exceed the limit of {self._limits.max_searches_per_batch} per batch",
                field="searches",
            )
        for index, query in enumerate(queries):
            try:
                self._check_search(query, f"searches[{index}].")
            except InvalidArgument as exc:
                raise InvalidArgument(f"searches[{index}]: {exc.message}", field=exc.field) from None
        outcomes = await asyncio.gather(
            *(self.search(query, f"searches[{i}].") for i, query in enumerate(queries)), return_exceptions=True
        )
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, CALLER_ERROR_TYPES):  # name the search at fault
                raise type(outcome)(f"searches[{index}]: {outcome.message}", field=outcome.field, reason=outcome.reason)
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]
