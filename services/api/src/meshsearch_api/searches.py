"""Searches: what a query may ask (checked before any work), and how it is answered. Vector and
hybrid searches need the query's embedding; when the embedder cannot give one in time (down,
breaker open, overloaded, frozen), keyword search answers instead, marked degraded, rather than
the call failing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from prometheus_client import Counter

from meshsearch_api.domain import SearchMode, SearchQuery, SearchResult
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.search_client import SearchClient
from meshsearch_common import context
from meshsearch_common.errors import CALLER_ERRORS, DeadlineExceeded, InvalidArgument, ResourceExhausted, Unavailable

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


@dataclass(frozen=True)
class SearchLimits:
    max_query_bytes: int
    max_top_k: int
    default_top_k: int
    max_searches_per_batch: int


class Searches:
    def __init__(self, search: SearchClient, embedder: EmbedderClient, limits: SearchLimits) -> None:
        self._search = search
        self._embedder = embedder
        self._limits = limits

    def _check_search(self, query: SearchQuery, field_prefix: str = "") -> int:
        """The number of results to fetch; INVALID_ARGUMENT naming the field otherwise."""
        if not query.collection:
            raise InvalidArgument("collection is required", field=f"{field_prefix}collection")
        if not query.text.strip():
            raise InvalidArgument("query is empty; send the text to search for", field=f"{field_prefix}query")
        if len(query.text.encode("utf-8")) > self._limits.max_query_bytes:
            raise InvalidArgument(
                f"query exceeds the limit of {self._limits.max_query_bytes} bytes", field=f"{field_prefix}query"
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
            ranked = await self._search.query(query, k)
            return SearchResult(ranked.hits, SearchMode.KEYWORD, ranked.partial_reason)
        self._search.fail_fast_if_open()  # no model time for a query that could not be run
        remaining = context.remaining_seconds()
        try:
            embedded = await self._embedder.embed(
                [query.text], timeout_s=None if remaining is None else remaining * EMBED_SHARE_WHEN_DEGRADABLE
            )
        except (Unavailable, DeadlineExceeded, ResourceExhausted) as exc:
            DEGRADED_SEARCHES.labels(type(exc).__name__).inc()
            reason = f"answered by keyword search: the query could not be embedded ({exc.message})"
            ranked = await self._search.query(query, k)
            return SearchResult(
                ranked.hits, SearchMode.KEYWORD, "; ".join(filter(None, (reason, ranked.partial_reason)))
            )
        ranked = await self._search.query(query, k, embedded.vectors[0], embedded.model)
        return SearchResult(ranked.hits, query.mode, ranked.partial_reason)

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
