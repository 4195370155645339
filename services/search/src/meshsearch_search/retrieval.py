"""Retriever: the k best points for a query, by the cheapest strategy that is correct.

Results are documents; a document stored as several chunks is found by its best chunk.
- vector, unfiltered: HNSW with ef_search >= the chunks fetched (or a full scan when exact);
- vector, filtered: exact search over the matching chunks when few match (one statement),
  else an iterative HNSW scan, re-sorted, so k documents come back whenever k match;
- keyword: BM25 over PostgreSQL's parsed text (`keyword`); hybrid: both rankings fused by
  reciprocal rank.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from meshsearch_common.errors import InvalidArgument, Unavailable
from meshsearch_search import keyword, shards
from meshsearch_search.collections import METRIC_OPERATORS
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection, Metric, ModelIdentity, ScoredPoint, Span
from meshsearch_search.filters import Filter
from meshsearch_search.points import PointLimits, PointStore, check_model, point_from_row, read_settings
from meshsearch_search.shards import Shard

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al., 2009)
HYBRID_MIN_CANDIDATES = 50  # documents taken from each ranking before fusion
BROAD_FILTER_MEMO_S = 30.0


@dataclass(frozen=True)
class QuerySpec:
    vector: npt.NDArray[np.float32] | None
    k: int
    text: str = ""
    ef_search: int = 0
    exact: bool = False
    score_threshold: float | None = None
    include_vectors: bool = False
    include_text: bool = True
    include_metadata: bool = True
    filter: Filter = field(default_factory=Filter)
    model: ModelIdentity | None = None  # the producer of `vector`, checked against the collection
    allow_partial: bool = False  # a sharded collection may answer without shards it cannot reach
    shards: tuple[int, ...] | None = None  # the shards to read (a partial answer); None: all


@dataclass(frozen=True)
class Answer:
    hits: list[ScoredPoint]
    unavailable_shards: tuple[str, ...] = ()  # named, when a partial answer left them out


def _score(metric: Metric, distance: float) -> float:
    """pgvector distance -> similarity where higher is better (see the Metric enum docs)."""
    if metric is Metric.COSINE:
        return 1.0 - distance
    return -distance  # <#> is the negated inner product; <-> is the L2 distance


class Retriever:
    def __init__(self, db: Database, store: PointStore) -> None:
        self._db = db
        self._store = store
        self.limits: PointLimits = store.limits
        self._sql_cache: dict[tuple[Any, ...], str] = {}
        # Filters recently seen to match more than exact_filter_max_rows points, with the time
        # until which that is trusted: they skip the capped exact attempt and go straight to
        # the iterative HNSW scan. Filters repeat (tenants, categories), so this saves the
        # wasted probe on most broad filtered queries; expiry re-probes as data changes.
        self._broad_filters: dict[tuple[Any, ...], float] = {}

    def _check_query(self, spec: QuerySpec) -> None:
        if not 1 <= spec.k <= self.limits.max_k:
            raise InvalidArgument(f"k {spec.k} is out of range: 1 to {self.limits.max_k}", field="k")
        if spec.ef_search > self.limits.max_ef_search:
            raise InvalidArgument(
                f"ef_search {spec.ef_search} exceeds the limit of {self.limits.max_ef_search}", field="ef_search"
            )
        if spec.vector is None and not spec.text.strip():
            raise InvalidArgument("a query needs a vector, a text, or both")

    async def query_batch(self, queries: list[tuple[str, QuerySpec]], concurrency: int) -> list[Answer]:
        """Several queries at once, at most `concurrency` in flight on the read pool; results in
        request order. The first failing query (by position) fails the batch, naming its index."""
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, name: str, spec: QuerySpec) -> Answer:
            async with gate:
                try:
                    return await self.answer(name, spec)
                except InvalidArgument as exc:
                    raise InvalidArgument(f"queries[{index}]: {exc.message}", field=exc.field) from None

        outcomes = await asyncio.gather(
            *(one(i, name, spec) for i, (name, spec) in enumerate(queries)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    async def query(self, name: str, spec: QuerySpec) -> list[ScoredPoint]:
        """The k best points, best first: vector, keyword or hybrid, optionally filtered."""
        return (await self.answer(name, spec)).hits

    async def answer(self, name: str, spec: QuerySpec) -> Answer:
        """`query`'s hits, and the shards a partial answer left out: when the query allows
        one, a shard the coordinator cannot reach is left out and the query asked again, until
        it is answered or no shard is left."""
        self._check_query(spec)

        async def run(collection: Collection) -> Answer:
            left_out: list[Shard] = []
            while True:
                gone = {shard.index for shard in left_out}
                live = tuple(i for i in range(collection.spec.shards) if i not in gone) if gone else None
                try:
                    hits = await self._hits(collection, replace(spec, shards=live))
                    # By number only: an answer may reach tenants, the shard's address may not.
                    return Answer(hits, tuple(f"shard {shard.index}" for shard in left_out))
                except Unavailable as exc:
                    shard = self._store.shards.unreached(exc) if spec.allow_partial and collection.sharded else None
                    if shard is None or shard.index in gone or len(gone) + 1 >= collection.spec.shards:
                        raise
                    left_out.append(shard)

        return await self._store.on_collection(name, run)

    async def _hits(self, collection: Collection, spec: QuerySpec) -> list[ScoredPoint]:
        if spec.vector is not None:
            check_model(collection, spec.model)
        if spec.vector is not None and spec.vector.shape[-1] != collection.spec.dimension:
            raise InvalidArgument(
                f"query vector has dimension {spec.vector.shape[-1]} but collection "
                f"'{collection.spec.name}' has dimension {collection.spec.dimension}"
            )
        if spec.vector is None:
            hits = await self._keyword(collection, spec, spec.k)
        elif spec.text.strip():
            hits = await self._hybrid(collection, spec)
        else:
            hits = await self._nearest(collection, spec)
        if spec.score_threshold is not None:
            hits = [hit for hit in hits if hit.score >= spec.score_threshold]
        return hits

    def _relation(self, collection: Collection, spec: QuerySpec, suffix: str = "") -> sql.Composable:
        """The collection's points (or, by `suffix`, postings or counters) as the query reads
        them: the table, or only the reachable shards' part of it for a partial answer."""
        if spec.shards is None:
            return sql.Identifier(collection.table + suffix)
        return shards.reachable(collection.table + suffix, spec.shards)

    def _columns(self, collection: Collection, spec: QuerySpec) -> dict[str, sql.Composable]:
        """Names for the statements below: `d` is a document's first row (text and metadata),
        `best` its best chunk."""
        operator, _ = METRIC_OPERATORS[collection.spec.metric]
        return {
            "vector": sql.SQL("embedding::vector" if spec.include_vectors else "NULL::vector"),
            "text": sql.SQL("d.text" if spec.include_text else "''"),
            "metadata": sql.SQL("d.metadata" if spec.include_metadata else "NULL::jsonb"),
            "op": sql.SQL(operator),
            "column": sql.SQL(collection.spec.storage.column_type),
            "table": sql.Identifier(collection.table),
        }

    def _settings(self, ef_search: int = 0, *, iterative: bool = False, exact: bool = False) -> dict[str, str]:
        return read_settings(self.limits, ef_search=ef_search, iterative=iterative, exact=exact)

    def _rendered(self, key: tuple[Any, ...], build: Callable[[], sql.Composable]) -> str:
        """SQL text for a statement shape, composed once: composing with psycopg.sql on every
        query cost about 40 µs, a tenth of the service's own time per query."""
        text = self._sql_cache.get(key)
        if text is None:
            if len(self._sql_cache) >= 1024:
                self._sql_cache.clear()
            text = self._sql_cache[key] = build().as_string(None)
        return text

    async def _nearest(self, collection: Collection, spec: QuerySpec) -> list[ScoredPoint]:
        """The k nearest documents, each by its nearest chunk. Chunks are fetched with some to
        spare when documents may have several (`_first_fetch`), and again with more when that
        was not enough. Unfiltered: HNSW, or a full scan when exact. Filtered: when at most
        `exact_filter_max_rows` chunks match, exact search over exactly those (one round trip);
        otherwise an iterative HNSW scan, which keeps scanning until enough match."""
        fetch = self._first_fetch(collection, spec.k)
        while True:
            hits, fetched = await self._nearest_chunks(collection, spec, fetch)
            if len(hits) >= spec.k or fetched < fetch or fetch >= self.limits.max_k * 4:
                return hits[: spec.k]
            fetch = min(fetch * 4, self.limits.max_k * 4)

    def _first_fetch(self, collection: Collection, k: int) -> int:
        """Chunks to fetch first for k documents: k when the writer said it does not chunk
        (each document one chunk), else some to spare; `_nearest` fetches more when chunks of
        one document took several places."""
        if collection.spec.chunk_tokens == 0:
            return k
        return min(max(2 * k, k + 10), self.limits.max_k * 4)

    async def _nearest_chunks(
        self, collection: Collection, spec: QuerySpec, fetch: int
    ) -> tuple[list[ScoredPoint], int]:
        filtered = not spec.filter.is_empty()
        where, params = self._store.where(spec.filter) if filtered else (sql.SQL("TRUE"), [])
        columns = self._columns(collection, spec)
        shape = (
            collection.table,
            collection.spec.metric,
            collection.spec.storage,
            spec.include_vectors,
            spec.include_text,
            spec.include_metadata,
        )
        where_key = where.as_string(None) if filtered else ""
        filter_key = (collection.table, where_key, json.dumps([str(p) for p in params]))

        def grouped(hits: str, matched: str = "NULL::bigint", **parts: sql.Composable) -> sql.Composable:
            """Best chunk per document, joined to the document's first row, best first; the
            last two columns are the chunks fetched and (exact path) the chunks matched."""
            return sql.SQL(
                "WITH "
                + hits
                + """,
                 best AS (SELECT DISTINCT ON (id) * FROM hits ORDER BY id, distance)
                 SELECT best.id, {text}, {metadata}, best.vec, best.distance, best.chunk, best.span_start,
                        coalesce(best.span_end, char_length(d.text)), (SELECT count(*) FROM hits), """
                + matched
                + """
                   FROM best JOIN {documents} d ON d.id = best.id AND d.chunk = 0
                  ORDER BY best.distance LIMIT %s"""
            ).format(where=where, documents=self._first_chunks(collection, spec), **columns, **parts)

        if collection.sharded:
            return await self._nearest_sharded(collection, spec, fetch, grouped, params, (*shape, where_key))
        if filtered and not spec.exact and self._broad_filters.get(filter_key, 0.0) < time.monotonic():
            cap = self.limits.exact_filter_max_rows
            exact_sql = self._rendered(
                ("exact", *shape, where_key),
                lambda: grouped(
                    """candidates AS MATERIALIZED (
                           SELECT id, chunk, span_start, span_end, embedding FROM {table} WHERE {where} LIMIT %s),
                       hits AS (SELECT id, chunk, span_start, span_end, {vector} AS vec,
                                       embedding {op} %s::{column} AS distance,
                                       (SELECT count(*) FROM candidates) AS matched
                                  FROM candidates ORDER BY distance LIMIT %s)""",
                    "best.matched",
                ),
            )
            async with self._db.read(self._settings(exact=True)) as conn:
                rows = await (await conn.execute(exact_sql, [*params, cap + 1, spec.vector, fetch, spec.k])).fetchall()
            if not rows or rows[0][9] <= cap:
                return [self._vector_hit(collection, row) for row in rows], int(rows[0][8]) if rows else 0
            if len(self._broad_filters) >= 1024:
                self._broad_filters.clear()
            self._broad_filters[filter_key] = time.monotonic() + BROAD_FILTER_MEMO_S

        def nearest_sql() -> sql.Composable:
            return grouped(
                """hits AS (SELECT id, chunk, span_start, span_end, {vector} AS vec,
                                   embedding {op} %s::{column} AS distance
                              FROM {table} WHERE {where} ORDER BY embedding {op} %s::{column} LIMIT %s)"""
            )

        statement = self._rendered(("nearest", *shape, where_key), nearest_sql)
        ef_search = max(fetch, spec.ef_search or self.limits.default_ef_search)
        settings = self._settings(exact=True) if spec.exact else self._settings(ef_search, iterative=filtered)
        async with self._db.read(settings) as conn:
            rows = await (await conn.execute(statement, [spec.vector, *params, spec.vector, fetch, spec.k])).fetchall()
        return [self._vector_hit(collection, row) for row in rows], int(rows[0][8]) if rows else 0

    async def _nearest_sharded(
        self,
        collection: Collection,
        spec: QuerySpec,
        fetch: int,
        grouped: Callable[..., sql.Composable],
        params: list[Any],
        shape: tuple[Any, ...],
    ) -> tuple[list[ScoredPoint], int]:
        """The nearest chunks of a sharded collection, through the coordinator: each shard's own
        best rows (its ORDER BY … LIMIT runs on the shard, on its HNSW index), merged here.

        Each shard sends `shards.per_shard_limit` rows, not `fetch`: the coordinator parses
        every row's vector to compute its distance (postgres_fdw does not send expressions to
        compute), which cost more than the shards' searches. When a shard sent its full limit
        and all of it made the merged top, it may hold more; the statement says so and is
        asked again with `fetch` per shard. Each branch carries its document's text and
        metadata, so a hit on a document's first chunk needs no second trip to the shards.

        The branches are scanned at once: an Append of foreign scans whose rows need no
        projection (docs/scaling.md). The shards search with iterative scans and the ef_search
        their sessions started with: a query asking for more than the shards' default (or
        fetching more rows) reads them through the foreign tables of an ef_search tier
        (`shards.EfTiers`). An exact search is exact on every shard (see `_merged`)."""
        count = len(spec.shards or range(collection.spec.shards))
        # The shards' own default stands for a query that sets none; a tier only serves more.
        tiers = self._store.shards.ef_tiers
        tier = None if spec.exact else tiers.serving(max(fetch, spec.ef_search or tiers.default))
        if tier is not None:
            await self._store.shards.ensure_tier(self._db, collection, tier)
        literal = shards.vector_literal(spec.vector.tolist()) if spec.vector is not None else None
        # The query vector and the filter's values, once per branch (see the statement below);
        # an exact search orders each branch by the distance again (`_merged`).
        ordering = [literal] if spec.exact else []
        arguments = [value for _ in range(count) for value in (literal, *params, *ordering)]
        limit = shards.per_shard_limit(fetch, count)
        rows = await self._merged(collection, spec, fetch, limit, tier, grouped, arguments, shape)
        if limit < fetch and rows and rows[0][9]:
            rows = await self._merged(collection, spec, fetch, fetch, tier, grouped, arguments, shape)
        return [self._vector_hit(collection, row) for row in rows], int(rows[0][8]) if rows else 0

    async def _merged(
        self,
        collection: Collection,
        spec: QuerySpec,
        fetch: int,
        limit: int,
        tier: int | None,
        grouped: Callable[..., sql.Composable],
        arguments: list[Any],
        shape: tuple[Any, ...],
    ) -> list[tuple[Any, ...]]:
        """The grouped rows of the best `fetch` among every shard's best `limit` (read through
        ef_search tier `tier`'s tables, if any); their last column counts the shards that sent
        `limit` rows all inside the best `fetch` (which may hold more of them)."""

        def sharded_sql() -> sql.Composable:
            where = self._store.where(spec.filter)[0] if not spec.filter.is_empty() else sql.SQL("TRUE")
            # Exact: ordered by an expression no index answers, each shard scans all its rows.
            order = sql.SQL("(embedding {op} %s::{column}) + 0" if spec.exact else "distance").format(
                **self._columns(collection, spec)
            )
            per_shard = sql.SQL(" UNION ALL ").join(
                sql.SQL(
                    "(SELECT id, chunk, span_start, span_end, text, metadata, {vector} AS vec, "
                    "embedding {op} %s::{column} AS distance, {index} AS shard "
                    "FROM {partition} WHERE {where} ORDER BY {order} LIMIT {limit})"
                ).format(
                    partition=sql.Identifier(shards.partition(collection, index, tier)),
                    order=order,
                    index=sql.Literal(index),
                    where=where,
                    limit=sql.Literal(limit),
                    **self._columns(collection, spec),
                )
                for index in (spec.shards or range(collection.spec.shards))
            )
            fuller = sql.SQL(
                """(SELECT count(*) FROM (SELECT FROM candidates GROUP BY shard
                      HAVING count(*) >= {limit}
                         AND ((SELECT count(*) FROM hits) < {fetch}
                              OR max(distance) <= (SELECT max(distance) FROM hits))
                   ) fuller)"""
            ).format(limit=sql.Literal(limit), fetch=sql.Literal(fetch))
            return grouped(
                """candidates AS MATERIALIZED (SELECT * FROM ({per_shard}) shards),
                   hits AS (SELECT * FROM candidates ORDER BY distance LIMIT {fetch})""",
                fuller.as_string(None),
                per_shard=per_shard,
                fetch=sql.Literal(fetch),
            )

        statement = self._rendered(("sharded", fetch, limit, tier, spec.exact, spec.shards, *shape), sharded_sql)
        async with self._db.read(self._settings()) as conn, psycopg.AsyncClientCursor(conn) as cursor:
            # Bound here, as literals: with the query vector a server-side parameter, the planner
            # kept each branch behind a projection, and the shards were scanned one by one.
            await cursor.execute(statement, [*arguments, spec.k])
            return await cursor.fetchall()

    def _first_chunks(self, collection: Collection, spec: QuerySpec) -> sql.Composable:
        """Where `grouped` reads the documents of its best hits (their first chunks, with the
        text and metadata). A sharded collection's hits carry their own when they are a first
        chunk; the others are fetched by id, and only when there are any."""
        table = self._relation(collection, spec)
        if not collection.sharded:
            return table
        return sql.SQL(
            """(SELECT id, chunk, text, metadata FROM best WHERE chunk = 0
                UNION ALL
                SELECT * FROM (SELECT id, chunk, text, metadata FROM {table}
                                WHERE chunk = 0 AND id = ANY(ARRAY(SELECT id FROM best WHERE chunk > 0))
                               OFFSET 0) later
                 WHERE EXISTS (SELECT FROM best WHERE chunk > 0))"""
        ).format(table=table)

    def _documents(self, collection: Collection, spec: QuerySpec, hits: str) -> sql.Composable:
        """Where the documents of `hits` (a relation with an id column) are read. A sharded
        collection's by their ids, which the coordinator sends to the shards; joined to the
        partitioned table, the planner could pull every shard's rows across instead."""
        table = self._relation(collection, spec)
        if not collection.sharded:
            return table
        return sql.SQL("(SELECT * FROM {table} WHERE chunk = 0 AND id = ANY(ARRAY(SELECT id FROM {hits})))").format(
            table=table, hits=sql.Identifier(hits)
        )

    def _vector_hit(self, collection: Collection, row: tuple[Any, ...]) -> ScoredPoint:
        return ScoredPoint(
            point_from_row(row),
            _score(collection.spec.metric, float(row[4])),
            Span(chunk=int(row[5]), start=int(row[6] or 0), end=int(row[7] or 0)),
        )

    async def _keyword(self, collection: Collection, spec: QuerySpec, k: int) -> list[ScoredPoint]:
        """The k best documents by BM25 (see `keyword`), among those passing the filter."""
        where, params = self._store.where(spec.filter)
        columns = self._columns(collection, spec)
        statement = sql.SQL(
            """WITH scored AS ({ranked})
               SELECT d.id, {text}, {metadata}, {d_vector}, scored.score
                 FROM scored JOIN {documents} d ON d.id = scored.id AND d.chunk = 0
                WHERE {where} ORDER BY scored.score DESC, d.id LIMIT %s"""
        ).format(
            ranked=keyword.ranked(
                collection,
                None
                if spec.shards is None
                else {name: self._relation(collection, spec, f"_{name}") for name in ("terms", "stats")},
            ),
            documents=self._documents(collection, spec, "scored"),
            where=where,
            d_vector=sql.SQL("d.embedding::vector" if spec.include_vectors else "NULL::vector"),
            **columns,
        )
        async with self._db.read(self._settings()) as conn:
            rows = await (await conn.execute(statement, [spec.text, *params, k])).fetchall()
        return [ScoredPoint(point_from_row(row), float(row[4])) for row in rows]

    async def _hybrid(self, collection: Collection, spec: QuerySpec) -> list[ScoredPoint]:
        """Vector and keyword rankings of the best candidates, fused by reciprocal rank: a
        document's score is the sum of 1 / (RRF_K + rank) over the rankings it appears in."""
        candidates = min(max(4 * spec.k, HYBRID_MIN_CANDIDATES), self.limits.max_k)
        wide = replace(spec, k=candidates)
        semantic = await self._nearest(collection, wide)
        lexical = await self._keyword(collection, wide, candidates)
        fused: dict[str, float] = {}
        found: dict[str, ScoredPoint] = {}
        for ranking in (semantic, lexical):
            for rank, hit in enumerate(ranking, start=1):
                fused[hit.point.id] = fused.get(hit.point.id, 0.0) + 1.0 / (RRF_K + rank)
                found.setdefault(hit.point.id, hit)  # the vector hit first: it names the best chunk
        best = sorted(fused, key=lambda point_id: (-fused[point_id], point_id))[: spec.k]
        return [replace(found[point_id], score=fused[point_id]) for point_id in best]
