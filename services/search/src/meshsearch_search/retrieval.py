"""Retriever: the k best points for a query, by the cheapest strategy that is correct.

- vector, unfiltered: HNSW with ef_search >= k (or a full scan when exact is asked);
- vector, filtered: exact search over the matching points when few match (one statement),
  else an iterative HNSW scan, re-sorted, so k rows come back whenever k points match;
- keyword: PostgreSQL full-text ranking; hybrid: both rankings fused by reciprocal rank.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql

from meshsearch_common.errors import InvalidArgument
from meshsearch_search.collections import METRIC_OPERATORS
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection, Metric, ModelIdentity, ScoredPoint
from meshsearch_search.filters import Filter
from meshsearch_search.points import PointLimits, PointStore, check_model, point_from_row, read_settings

RRF_K = 60  # reciprocal rank fusion constant (Cormack et al., 2009)
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
    filter: Filter = field(default_factory=Filter)
    model: ModelIdentity | None = None  # the producer of `vector`, checked against the collection


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
            raise InvalidArgument(f"k {spec.k} is out of range: 1 to {self.limits.max_k}")
        if spec.ef_search > self.limits.max_ef_search:
            raise InvalidArgument(f"ef_search {spec.ef_search} exceeds the limit of {self.limits.max_ef_search}")
        if spec.vector is None and not spec.text.strip():
            raise InvalidArgument("a query needs a vector, a text, or both")

    async def query_batch(self, queries: list[tuple[str, QuerySpec]], concurrency: int) -> list[list[ScoredPoint]]:
        """Several queries at once, at most `concurrency` in flight on the read pool; results in
        request order. The first failing query (by position) fails the batch, naming its index."""
        gate = asyncio.Semaphore(concurrency)

        async def one(index: int, name: str, spec: QuerySpec) -> list[ScoredPoint]:
            async with gate:
                try:
                    return await self.query(name, spec)
                except InvalidArgument as exc:
                    raise InvalidArgument(f"queries[{index}]: {exc.message}") from None

        outcomes = await asyncio.gather(
            *(one(i, name, spec) for i, (name, spec) in enumerate(queries)), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    async def query(self, name: str, spec: QuerySpec) -> list[ScoredPoint]:
        """The k best points, best first: vector, keyword or hybrid, optionally filtered."""
        self._check_query(spec)

        async def run(collection: Collection) -> list[ScoredPoint]:
            if spec.vector is not None:
                check_model(collection, spec.model)
            if spec.vector is not None and spec.vector.shape[-1] != collection.spec.dimension:
                raise InvalidArgument(
                    f"query vector has dimension {spec.vector.shape[-1]} but collection "
                    f"'{collection.spec.name}' has dimension {collection.spec.dimension}"
                )
            if spec.vector is None:
                hits = await self._keyword(collection, spec)
            elif spec.text.strip():
                hits = await self._hybrid(collection, spec)
            else:
                hits = await self._nearest(collection, spec)
            if spec.score_threshold is not None:
                hits = [hit for hit in hits if hit.score >= spec.score_threshold]
            return hits

        return await self._store.on_collection(name, run)

    def _vector_sql(self, collection: Collection, include_vectors: bool) -> dict[str, sql.Composable]:
        operator, _ = METRIC_OPERATORS[collection.spec.metric]
        return {
            "vector": sql.SQL("embedding::vector" if include_vectors else "NULL"),
            "op": sql.SQL(operator),
            "column": sql.SQL(collection.spec.storage.column_type),
            "table": sql.Identifier(collection.table),
        }

    def _settings(
        self, spec: QuerySpec | None = None, *, iterative: bool = False, exact: bool = False
    ) -> dict[str, str]:
        ef_search = max(spec.k, spec.ef_search or self.limits.default_ef_search) if spec else 0
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
        """Vector search. Unfiltered: HNSW (or a full scan when exact). Filtered: when at most
        `exact_filter_max_rows` points match, exact search over exactly those (one round trip);
        otherwise an iterative HNSW scan, which keeps scanning until k matches are found."""
        filtered = not spec.filter.is_empty()
        where, params = self._store.where(spec.filter) if filtered else (sql.SQL("TRUE"), [])
        shape = (collection.table, collection.spec.metric, collection.spec.storage, spec.include_vectors)
        where_key = where.as_string(None) if filtered else ""
        filter_key = (collection.table, where_key, json.dumps([str(p) for p in params]))
        if filtered and not spec.exact and self._broad_filters.get(filter_key, 0.0) < time.monotonic():
            cap = self.limits.exact_filter_max_rows
            exact_sql = self._rendered(
                ("exact", *shape, where_key),
                lambda: sql.SQL(
                    """WITH candidates AS MATERIALIZED (
                           SELECT id, text, metadata, embedding FROM {table} WHERE {where} LIMIT %s)
                       SELECT id, text, metadata, {vector}, embedding {op} %s::{column} AS distance,
                              (SELECT count(*) FROM candidates) AS matched
                         FROM candidates ORDER BY distance LIMIT %s"""
                ).format(where=where, **self._vector_sql(collection, spec.include_vectors)),
            )
            async with self._db.read(self._settings(exact=True)) as conn:
                rows = await (await conn.execute(exact_sql, [*params, cap + 1, spec.vector, spec.k])).fetchall()
            if not rows or rows[0][5] <= cap:
                return [ScoredPoint(point_from_row(row), _score(collection.spec.metric, float(row[4]))) for row in rows]
            if len(self._broad_filters) >= 1024:
                self._broad_filters.clear()
            self._broad_filters[filter_key] = time.monotonic() + BROAD_FILTER_MEMO_S

        def nearest_sql() -> sql.Composable:
            nearest = """SELECT id, text, metadata, {vector}, embedding {op} %s::{column} AS distance
                           FROM {table} WHERE {where} ORDER BY embedding {op} %s::{column} LIMIT %s"""
            if filtered:  # iterative scans may return rows slightly out of order: re-sort the k found
                nearest = f"SELECT * FROM ({nearest}) found ORDER BY distance"
            return sql.SQL(nearest).format(where=where, **self._vector_sql(collection, spec.include_vectors))

        statement = self._rendered(("nearest", *shape, where_key), nearest_sql)
        settings = self._settings(exact=True) if spec.exact else self._settings(spec, iterative=filtered)
        async with self._db.read(settings) as conn:
            rows = await (await conn.execute(statement, [spec.vector, *params, spec.vector, spec.k])).fetchall()
        return [ScoredPoint(point_from_row(row), _score(collection.spec.metric, float(row[4]))) for row in rows]

    async def _keyword(self, collection: Collection, spec: QuerySpec) -> list[ScoredPoint]:
        parts = self._vector_sql(collection, spec.include_vectors)
        where, params = self._store.where(spec.filter)
        statement = sql.SQL(
            """SELECT id, text, metadata, {vector}, ts_rank_cd(tsv, query) AS score
                 FROM {table}, websearch_to_tsquery('english', %s) query
                WHERE tsv @@ query AND {where} ORDER BY score DESC, id LIMIT %s"""
        ).format(where=where, **parts)
        async with self._db.read(self._settings()) as conn:
            rows = await (await conn.execute(statement, [spec.text, *params, spec.k])).fetchall()
        return [ScoredPoint(point_from_row(row), float(row[4])) for row in rows]

    async def _hybrid(self, collection: Collection, spec: QuerySpec) -> list[ScoredPoint]:
        """Vector and keyword rankings of the top candidates fused by reciprocal rank, in one statement."""
        parts = self._vector_sql(collection, spec.include_vectors)
        where, params = self._store.where(spec.filter)
        candidates = min(max(4 * spec.k, 50), self.limits.max_k)
        statement = sql.SQL(
            """WITH semantic AS (
                   SELECT id, row_number() OVER (ORDER BY distance) AS rank FROM (
                       SELECT id, embedding {op} %s::{column} AS distance FROM {table}
                        WHERE {where} ORDER BY embedding {op} %s::{column} LIMIT %s) nearest),
               keyword AS (
                   SELECT id, row_number() OVER (ORDER BY ts_rank_cd(tsv, query) DESC, id) AS rank
                     FROM {table}, websearch_to_tsquery('english', %s) query
                    WHERE tsv @@ query AND {where}
                    ORDER BY ts_rank_cd(tsv, query) DESC, id LIMIT %s),
               fused AS (
                   SELECT id, coalesce(1.0 / ({rrf} + semantic.rank), 0)
                            + coalesce(1.0 / ({rrf} + keyword.rank), 0) AS score
                     FROM semantic FULL OUTER JOIN keyword USING (id))
               SELECT p.id, p.text, p.metadata, {vector_p}, fused.score
                 FROM fused JOIN {table} p USING (id) ORDER BY fused.score DESC, p.id LIMIT %s"""
        ).format(
            where=where,
            rrf=sql.Literal(RRF_K),
            vector_p=sql.SQL("p.embedding::vector" if spec.include_vectors else "NULL"),
            **parts,
        )
        values = [spec.vector, *params, spec.vector, candidates, spec.text, *params, candidates, spec.k]
        settings = self._settings(spec, iterative=not spec.filter.is_empty())
        async with self._db.read(settings) as conn:
            rows = await (await conn.execute(statement, values)).fetchall()
        return [ScoredPoint(point_from_row(row), float(row[4])) for row in rows]
