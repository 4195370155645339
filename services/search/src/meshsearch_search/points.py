"""PointStore: write, read, delete and query the points of a collection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg_pool
from psycopg import sql
from psycopg.types.json import Jsonb

from meshsearch_common.errors import FailedPrecondition, InvalidArgument
from meshsearch_search.collections import COLUMN_TYPES, METRIC_OPERATORS, CollectionStore
from meshsearch_search.db import transaction
from meshsearch_search.domain import Collection, ItemError, Metric, ModelIdentity, Point, ScoredPoint

MAX_ID_CHARS = 256


@dataclass(frozen=True)
class PointLimits:
    max_batch_points: int
    max_text_bytes: int
    max_metadata_bytes: int
    max_k: int
    max_ef_search: int
    default_ef_search: int


def _score(metric: Metric, distance: float) -> float:
    """pgvector distance -> similarity where higher is better (see the Metric enum docs)."""
    if metric is Metric.COSINE:
        return 1.0 - distance
    return -distance  # <#> is the negated inner product; <-> is the L2 distance


def _check_dimension(collection: Collection, vector: npt.NDArray[np.float32], what: str) -> None:
    if vector.shape[-1] != collection.spec.dimension:
        raise InvalidArgument(
            f"{what} has dimension {vector.shape[-1]} but collection '{collection.spec.name}' "
            f"has dimension {collection.spec.dimension}"
        )


def _check_model(collection: Collection, model: ModelIdentity | None) -> None:
    expected = collection.spec.model
    if model is None or not model.id or not expected.id:
        return
    if model.id != expected.id or (model.dimension and model.dimension != collection.spec.dimension):
        raise FailedPrecondition(
            f"collection '{collection.spec.name}' holds vectors of model {expected.id} "
            f"({collection.spec.dimension} dims); refusing vectors of model {model.id} ({model.dimension} dims)"
        )


class PointStore:
    def __init__(
        self, pool: psycopg_pool.AsyncConnectionPool, collections: CollectionStore, limits: PointLimits
    ) -> None:
        self._pool = pool
        self._collections = collections
        self.limits = limits

    def _check_batch(self, size: int, what: str) -> None:
        if size == 0:
            raise InvalidArgument(f"{what} must not be empty")
        if size > self.limits.max_batch_points:
            raise InvalidArgument(f"{size} {what} exceed the limit of {self.limits.max_batch_points} per call")

    def _item_problem(self, collection: Collection, point: Point) -> str | None:
        if not 1 <= len(point.id) <= MAX_ID_CHARS:
            return f"id must be 1 to {MAX_ID_CHARS} characters"
        if point.vector is None:
            return "vector is required"
        if point.vector.shape[-1] != collection.spec.dimension:
            return (
                f"vector has dimension {point.vector.shape[-1]} but collection '{collection.spec.name}' "
                f"has dimension {collection.spec.dimension}"
            )
        if len(point.text.encode("utf-8")) > self.limits.max_text_bytes:
            return f"text exceeds the limit of {self.limits.max_text_bytes} bytes"
        if "\x00" in point.text:
            return "text must not contain NUL characters"
        if len(json.dumps(point.metadata)) > self.limits.max_metadata_bytes:
            return f"metadata exceeds the limit of {self.limits.max_metadata_bytes} bytes as JSON"
        return None

    async def upsert(self, name: str, points: list[Point], model: ModelIdentity | None) -> tuple[int, list[ItemError]]:
        """Write valid points (insert or replace by id); report invalid ones per item."""
        self._check_batch(len(points), "points")
        collection = await self._collections.get(name, count=False)
        _check_model(collection, model)
        errors: list[ItemError] = []
        rows: list[tuple[Any, ...]] = []
        for index, point in enumerate(points):
            problem = self._item_problem(collection, point)
            if problem:
                errors.append(ItemError(index, point.id, problem))
            else:
                rows.append((point.id, point.vector, point.text, Jsonb(point.metadata)))
        if rows:
            column = sql.SQL(COLUMN_TYPES[collection.spec.storage])
            statement = sql.SQL(
                """INSERT INTO {table} (id, embedding, text, metadata) VALUES (%s, %s::{column}, %s, %s)
                   ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, text = EXCLUDED.text,
                       metadata = EXCLUDED.metadata, updated_at = now()"""
            ).format(table=sql.Identifier(collection.table), column=column)
            async with transaction(self._pool) as conn:
                async with conn.cursor() as cursor:
                    await cursor.executemany(statement, rows)
        return len(rows), errors

    async def get(self, name: str, ids: list[str], include_vectors: bool) -> tuple[list[Point], list[str]]:
        self._check_batch(len(ids), "ids")
        collection = await self._collections.get(name, count=False)
        vector_column = sql.SQL("embedding::vector" if include_vectors else "NULL")
        statement = sql.SQL("SELECT id, text, metadata, {vector} FROM {table} WHERE id = ANY(%s)").format(
            vector=vector_column, table=sql.Identifier(collection.table)
        )
        async with transaction(self._pool) as conn:
            cursor = await conn.execute(statement, (ids,))
            found = {row[0]: _point(row) for row in await cursor.fetchall()}
        ordered = [found[i] for i in dict.fromkeys(ids) if i in found]
        missing = [i for i in dict.fromkeys(ids) if i not in found]
        return ordered, missing

    async def delete(self, name: str, ids: list[str]) -> int:
        self._check_batch(len(ids), "ids")
        collection = await self._collections.get(name, count=False)
        statement = sql.SQL("DELETE FROM {table} WHERE id = ANY(%s)").format(table=sql.Identifier(collection.table))
        async with transaction(self._pool) as conn:
            cursor = await conn.execute(statement, (ids,))
            return cursor.rowcount

    async def query(
        self,
        name: str,
        vector: npt.NDArray[np.float32],
        k: int,
        *,
        ef_search: int = 0,
        exact: bool = False,
        score_threshold: float | None = None,
        include_vectors: bool = False,
    ) -> list[ScoredPoint]:
        """The k points nearest to `vector`, best first.

        ef_search is raised to k (pgvector's HNSW scan returns at most ef_search rows).
        Exact mode disables index scans, so PostgreSQL compares against every point.
        """
        if not 1 <= k <= self.limits.max_k:
            raise InvalidArgument(f"k {k} is out of range: 1 to {self.limits.max_k}")
        if ef_search > self.limits.max_ef_search:
            raise InvalidArgument(f"ef_search {ef_search} exceeds the limit of {self.limits.max_ef_search}")
        collection = await self._collections.get(name, count=False)
        _check_dimension(collection, vector, "query vector")
        operator, _ = METRIC_OPERATORS[collection.spec.metric]
        column = COLUMN_TYPES[collection.spec.storage]
        vector_column = sql.SQL("embedding::vector" if include_vectors else "NULL")
        statement = sql.SQL(
            """SELECT id, text, metadata, {vector}, embedding {op} %(q)s::{column} AS distance
                 FROM {table} ORDER BY embedding {op} %(q)s::{column} LIMIT %(k)s"""
        ).format(
            vector=vector_column,
            op=sql.SQL(operator),
            column=sql.SQL(column),
            table=sql.Identifier(collection.table),
        )
        effective_ef = max(k, ef_search or self.limits.default_ef_search)
        async with transaction(self._pool) as conn:
            await conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(effective_ef),))
            if exact:
                await conn.execute("SELECT set_config('enable_indexscan', 'off', true)")
            cursor = await conn.execute(statement, {"q": vector, "k": k})
            rows = await cursor.fetchall()
        results = [ScoredPoint(_point(row), _score(collection.spec.metric, float(row[4]))) for row in rows]
        if score_threshold is not None:
            results = [hit for hit in results if hit.score >= score_threshold]
        return results


def _point(row: tuple[Any, ...]) -> Point:
    raw = row[3]
    vector = None if raw is None else np.asarray(raw.to_numpy() if hasattr(raw, "to_numpy") else raw, dtype=np.float32)
    return Point(id=row[0], text=row[1], metadata=row[2] or {}, vector=vector)
