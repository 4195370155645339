"""PointStore: write, read, delete, scroll and query the points of a collection."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from meshsearch_common.errors import FailedPrecondition, InvalidArgument
from meshsearch_search.collections import COLUMN_TYPES, METRIC_OPERATORS, CollectionStore
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection, ItemError, Metric, ModelIdentity, Point, ScoredPoint
from meshsearch_search.filters import Filter, FilterLimits, compile_filter

MAX_ID_CHARS = 256
RRF_K = 60  # reciprocal rank fusion constant (Cormack et al., 2009)
BROAD_FILTER_MEMO_S = 30.0
T = TypeVar("T")


@dataclass(frozen=True)
class PointLimits:
    max_batch_points: int
    max_text_bytes: int
    max_metadata_bytes: int
    max_k: int
    max_ef_search: int
    default_ef_search: int
    exact_filter_max_rows: int = 2000
    max_scan_tuples: int = 40_000
    max_batch_queries: int = 64
    filters: FilterLimits = field(default_factory=FilterLimits)


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


def _score(metric: Metric, distance: float) -> float:
    """pgvector distance -> similarity where higher is better (see the Metric enum docs)."""
    if metric is Metric.COSINE:
        return 1.0 - distance
    return -distance  # <#> is the negated inner product; <-> is the L2 distance


def _check_model(collection: Collection, model: ModelIdentity | None) -> None:
    expected = collection.spec.model
    if model is None or not model.id or not expected.id:
        return
    if model.id != expected.id or (model.dimension and model.dimension != collection.spec.dimension):
        raise FailedPrecondition(
            f"collection '{collection.spec.name}' holds vectors of model {expected.id} "
            f"({collection.spec.dimension} dims); refusing vectors of model {model.id} ({model.dimension} dims)"
        )


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        last_id = base64.b64decode(cursor.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        last_id = ""
    if not last_id:
        raise InvalidArgument("cursor is not one this server issued; pass next_cursor unchanged")
    return last_id


def _point(row: tuple[Any, ...]) -> Point:
    raw = row[3]
    vector = None if raw is None else np.asarray(raw.to_numpy() if hasattr(raw, "to_numpy") else raw, np.float32)
    return Point(id=row[0], text=row[1], metadata=row[2] or {}, vector=vector)


class PointStore:
    def __init__(self, db: Database, collections: CollectionStore, limits: PointLimits) -> None:
        self._db = db
        self._collections = collections
        self.limits = limits
        self._sql_cache: dict[tuple[Any, ...], str] = {}
        # Filters recently seen to match more than exact_filter_max_rows points, with the time
        # until which that is trusted: they skip the capped exact attempt and go straight to
        # the iterative HNSW scan. Filters repeat (tenants, categories), so this saves the
        # wasted probe on most broad filtered queries; expiry re-probes as data changes.
        self._broad_filters: dict[tuple[Any, ...], float] = {}

    async def _on_collection(self, name: str, operation: Callable[[Collection], Awaitable[T]]) -> T:
        """Run `operation` on the (possibly cached) collection; if its table vanished (dropped
        or recreated by another replica), refresh once, which raises NOT_FOUND if it is gone."""
        collection = await self._collections.get(name, count=False)
        try:
            return await operation(collection)
        except pg_errors.UndefinedTable:
            self._collections.invalidate(name)
            return await operation(await self._collections.get(name, count=False))

    def _check_batch(self, size: int, what: str) -> None:
        if size == 0:
            raise InvalidArgument(f"{what} must not be empty")
        if size > self.limits.max_batch_points:
            raise InvalidArgument(f"{size} {what} exceed the limit of {self.limits.max_batch_points} per call")

    def item_problem(self, collection: Collection, point: Point) -> str | None:
        """Why `point` cannot be stored in `collection`, or None."""
        if point.vector is None:
            return "vector is required"
        return self.row_problem(
            collection,
            point.id,
            point.text,
            len(json.dumps(point.metadata, separators=(",", ":"))),
            point.vector.shape[-1],
        )

    def row_problem(
        self, collection: Collection, point_id: str, text: str, metadata_bytes: int, dimension: int
    ) -> str | None:
        """The checks every stored point passes, on plain values (shared by Upsert and bulk loads)."""
        if not 1 <= len(point_id) <= MAX_ID_CHARS:
            return f"id must be 1 to {MAX_ID_CHARS} characters"
        if dimension != collection.spec.dimension:
            return (
                f"vector has dimension {dimension} but collection '{collection.spec.name}' "
                f"has dimension {collection.spec.dimension}"
            )
        if len(text) > self.limits.max_text_bytes // 4 and len(text.encode("utf-8")) > self.limits.max_text_bytes:
            return f"text exceeds the limit of {self.limits.max_text_bytes} bytes"
        if "\x00" in text or "\x00" in point_id:
            return "id and text must not contain NUL characters"
        if metadata_bytes > self.limits.max_metadata_bytes:
            return f"metadata exceeds the limit of {self.limits.max_metadata_bytes} bytes as JSON"
        return None

    def model_check(self, collection: Collection, model: ModelIdentity | None) -> None:
        _check_model(collection, model)

    def _where(self, node: Filter) -> tuple[sql.Composable, list[Any]]:
        return compile_filter(node, self.limits.filters)

    async def upsert(self, name: str, points: list[Point], model: ModelIdentity | None) -> tuple[int, list[ItemError]]:
        """Write valid points (insert or replace by id); report invalid ones per item."""
        self._check_batch(len(points), "points")

        async def write(collection: Collection) -> tuple[int, list[ItemError]]:
            _check_model(collection, model)
            errors: list[ItemError] = []
            rows: list[tuple[Any, ...]] = []
            for index, point in enumerate(points):
                problem = self.item_problem(collection, point)
                if problem:
                    errors.append(ItemError(index, point.id, problem))
                else:
                    rows.append((point.id, point.vector, point.text, Jsonb(point.metadata)))
            if rows:
                statement = sql.SQL(
                    """INSERT INTO {table} (id, embedding, text, metadata) VALUES (%s, %s::{column}, %s, %s)
                       ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, text = EXCLUDED.text,
                           metadata = EXCLUDED.metadata, updated_at = now()"""
                ).format(table=sql.Identifier(collection.table), column=sql.SQL(COLUMN_TYPES[collection.spec.storage]))
                async with self._db.transaction() as conn:
                    async with conn.cursor() as cursor:
                        await cursor.executemany(statement, rows)
            return len(rows), errors

        return await self._on_collection(name, write)

    async def get(self, name: str, ids: list[str], include_vectors: bool) -> tuple[list[Point], list[str]]:
        self._check_batch(len(ids), "ids")

        async def read(collection: Collection) -> dict[str, Point]:
            statement = sql.SQL("SELECT id, text, metadata, {vector} FROM {table} WHERE id = ANY(%s)").format(
                vector=sql.SQL("embedding::vector" if include_vectors else "NULL"),
                table=sql.Identifier(collection.table),
            )
            async with self._db.read(self._settings()) as conn:
                cursor = await conn.execute(statement, (ids,))
                return {row[0]: _point(row) for row in await cursor.fetchall()}

        found = await self._on_collection(name, read)
        unique = list(dict.fromkeys(ids))
        return [found[i] for i in unique if i in found], [i for i in unique if i not in found]

    async def delete(self, name: str, ids: list[str], node: Filter | None = None) -> int:
        """Delete by ids, or by a non-empty filter (exactly one of the two)."""
        by_filter = node is not None and not node.is_empty()
        if by_filter == bool(ids):
            raise InvalidArgument("give either ids or a non-empty filter to delete by")
        if ids:
            self._check_batch(len(ids), "ids")

        async def remove(collection: Collection) -> int:
            if by_filter:
                assert node is not None
                where, params = self._where(node)
            else:
                where, params = sql.SQL("id = ANY(%s)"), [ids]
            statement = sql.SQL("DELETE FROM {table} WHERE {where}").format(
                table=sql.Identifier(collection.table), where=where
            )
            async with self._db.transaction() as conn:
                cursor = await conn.execute(statement, params)
                return cursor.rowcount

        return await self._on_collection(name, remove)

    async def scroll(
        self, name: str, node: Filter, limit: int, cursor: str, include_vectors: bool
    ) -> tuple[list[Point], str]:
        """One page of matching points in id order, and the cursor of the next page ("" at the end)."""
        limit = limit or 100
        if not 1 <= limit <= self.limits.max_batch_points:
            raise InvalidArgument(f"limit {limit} is out of range: 1 to {self.limits.max_batch_points}")
        after = decode_cursor(cursor) if cursor else None

        async def page(collection: Collection) -> list[Point]:
            where, params = self._where(node)
            statement = sql.SQL(
                "SELECT id, text, metadata, {vector} FROM {table} WHERE {where} AND ({after}) ORDER BY id LIMIT %s"
            ).format(
                vector=sql.SQL("embedding::vector" if include_vectors else "NULL"),
                table=sql.Identifier(collection.table),
                where=where,
                after=sql.SQL("TRUE" if after is None else "id > %s"),
            )
            async with self._db.read(self._settings()) as conn:
                rows = await (
                    await conn.execute(statement, [*params, *([after] if after else []), limit + 1])
                ).fetchall()
            return [_point(row) for row in rows]

        points = await self._on_collection(name, page)
        if len(points) > limit:
            return points[:limit], encode_cursor(points[limit - 1].id)
        return points, ""

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

        return await self._on_collection(name, run)

    def _vector_sql(self, collection: Collection, include_vectors: bool) -> dict[str, sql.Composable]:
        operator, _ = METRIC_OPERATORS[collection.spec.metric]
        return {
            "vector": sql.SQL("embedding::vector" if include_vectors else "NULL"),
            "op": sql.SQL(operator),
            "column": sql.SQL(COLUMN_TYPES[collection.spec.storage]),
            "table": sql.Identifier(collection.table),
        }

    def _settings(
        self, spec: QuerySpec | None = None, *, iterative: bool = False, exact: bool = False
    ) -> dict[str, str]:
        """Every session setting a read may change, so none leaks from one query to the next.

        pgvector returns at most ef_search rows from an HNSW scan, so ef_search is never below
        k; iterative scans (for filters) keep scanning until k rows pass the filter; exact reads
        disable index scans so the HNSW index is not used (GIN bitmap scans for filters still are).
        """
        ef_search = self.limits.default_ef_search
        if spec is not None:
            ef_search = max(spec.k, spec.ef_search or self.limits.default_ef_search)
        return {
            "hnsw.ef_search": str(ef_search),
            "hnsw.iterative_scan": "relaxed_order" if iterative else "off",
            "hnsw.max_scan_tuples": str(self.limits.max_scan_tuples),
            "enable_indexscan": "off" if exact else "on",
        }

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
        where, params = self._where(spec.filter) if filtered else (sql.SQL("TRUE"), [])
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
                return [ScoredPoint(_point(row), _score(collection.spec.metric, float(row[4]))) for row in rows]
            if len(self._broad_filters) >= 1024:
                self._broad_filters.clear()
            self._broad_filters[filter_key] = time.monotonic() + BROAD_FILTER_MEMO_S
        # Iterative scans may return rows slightly out of order: re-sort the k found.
        statement = self._rendered(
            ("nearest", *shape, where_key),
            lambda: sql.SQL(
                """SELECT * FROM (
                       SELECT id, text, metadata, {vector}, embedding {op} %s::{column} AS distance
                         FROM {table} WHERE {where} ORDER BY embedding {op} %s::{column} LIMIT %s) found
                   ORDER BY distance"""
            ).format(where=where, **self._vector_sql(collection, spec.include_vectors)),
        )
        settings = self._settings(exact=True) if spec.exact else self._settings(spec, iterative=filtered)
        async with self._db.read(settings) as conn:
            rows = await (await conn.execute(statement, [spec.vector, *params, spec.vector, spec.k])).fetchall()
        return [ScoredPoint(_point(row), _score(collection.spec.metric, float(row[4]))) for row in rows]

    async def _keyword(self, collection: Collection, spec: QuerySpec) -> list[ScoredPoint]:
        parts = self._vector_sql(collection, spec.include_vectors)
        where, params = self._where(spec.filter)
        statement = sql.SQL(
            """SELECT id, text, metadata, {vector}, ts_rank_cd(tsv, query) AS score
                 FROM {table}, websearch_to_tsquery('english', %s) query
                WHERE tsv @@ query AND {where} ORDER BY score DESC, id LIMIT %s"""
        ).format(where=where, **parts)
        async with self._db.read(self._settings()) as conn:
            rows = await (await conn.execute(statement, [spec.text, *params, spec.k])).fetchall()
        return [ScoredPoint(_point(row), float(row[4])) for row in rows]

    async def _hybrid(self, collection: Collection, spec: QuerySpec) -> list[ScoredPoint]:
        """Vector and keyword rankings of the top candidates fused by reciprocal rank, in one statement."""
        parts = self._vector_sql(collection, spec.include_vectors)
        where, params = self._where(spec.filter)
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
        return [ScoredPoint(_point(row), float(row[4])) for row in rows]
