"""PointStore: write, read, delete, scroll and query the points of a collection."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from meshsearch_common import pages
from meshsearch_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from meshsearch_common.identifiers import document_id_problem
from meshsearch_search import keyword, receipts
from meshsearch_search.collections import CollectionStore
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection, ItemError, ModelIdentity, Point
from meshsearch_search.filters import Filter, FilterLimits, compile_filter
from meshsearch_search.receipts import check_receipt
from meshsearch_search.settings import SearchSettings
from meshsearch_search.shards import Shard, Shards

T = TypeVar("T")


class Upserted(NamedTuple):
    """What an Upsert wrote: how many documents, which were rejected, and whether its receipt
    had been recorded before (then nothing was written)."""

    upserted: int
    errors: list[ItemError]
    already_applied: bool = False


@dataclass(frozen=True)
class PointLimits:
    """Bounds and defaults of point reads and writes; built from SearchSettings, the one source
    of their values."""

    max_batch_points: int
    max_text_bytes: int
    max_metadata_bytes: int
    max_k: int
    max_ef_search: int
    default_ef_search: int
    exact_filter_max_rows: int
    max_scan_tuples: int
    max_batch_queries: int
    max_chunks: int
    filters: FilterLimits

    @classmethod
    def from_settings(cls, settings: SearchSettings) -> PointLimits:
        return cls(
            max_batch_points=settings.max_batch_points,
            max_text_bytes=settings.max_text_bytes,
            max_metadata_bytes=settings.max_metadata_bytes,
            max_k=settings.max_k,
            max_ef_search=settings.max_ef_search,
            default_ef_search=settings.default_ef_search,
            exact_filter_max_rows=settings.exact_filter_max_rows,
            max_scan_tuples=settings.max_scan_tuples,
            max_batch_queries=settings.max_batch_queries,
            max_chunks=settings.max_chunks,
            filters=FilterLimits(
                settings.max_filter_depth, settings.max_filter_conditions, settings.max_filter_in_values
            ),
        )


def read_settings(
    limits: PointLimits, *, ef_search: int = 0, iterative: bool = False, exact: bool = False
) -> dict[str, str]:
    """Every session setting a read may change, so none leaks from one read to the next.

    pgvector returns at most ef_search rows from an HNSW scan, so callers pass ef_search >= k;
    iterative scans (for filters) keep scanning until k rows pass the filter; exact reads
    disable index scans so the HNSW index is not used (GIN bitmap scans for filters still are).
    """
    return {
        "hnsw.ef_search": str(ef_search or limits.default_ef_search),
        "hnsw.iterative_scan": "relaxed_order" if iterative else "off",
        "hnsw.max_scan_tuples": str(limits.max_scan_tuples),
        "enable_indexscan": "off" if exact else "on",
    }


def point_from_row(row: tuple[Any, ...]) -> Point:
    """A Point from (id, text, metadata, vector or NULL) columns."""
    raw = row[3]
    vector = None if raw is None else np.asarray(raw.to_numpy() if hasattr(raw, "to_numpy") else raw, np.float32)
    return Point(id=row[0], text=row[1], metadata=row[2] or {}, vector=vector)


def check_model(collection: Collection, model: ModelIdentity | None, *, writing: bool = False) -> None:
    """FAILED_PRECONDITION unless `model` (when given) is the collection's model: vectors of
    different models, or of different revisions of one model, are not comparable. Writes must
    also match the numerics recorded at creation, unless the collection accepts mixed ones:
    vectors of other numerics are close (cosine ~0.994) but not equal, so a collection holds
    one kind unless its owner chose otherwise. Queries of any numerics are answered."""
    expected = collection.spec.model
    if model is None or not model.id or not expected.id:
        return
    if (
        writing
        and not collection.spec.mixed_numerics
        and model.numerics
        and expected.numerics
        and model.numerics != expected.numerics
    ):
        raise FailedPrecondition(
            f"collection '{collection.spec.name}' holds vectors computed with {expected.numerics}; these were "
            f"computed with {model.numerics} (another embedder backend or device). Run embedders of one "
            "kind, or create the collection with mixed_numerics to accept both",
            reason="NUMERICS_MISMATCH",
        )
    same_revision = not model.revision or not expected.revision or model.revision == expected.revision
    if (
        model.id != expected.id
        or not same_revision
        or (model.dimension and model.dimension != collection.spec.dimension)
    ):
        raise FailedPrecondition(
            f"collection '{collection.spec.name}' holds vectors of model {expected.id} "
            f"(revision {expected.revision or '?'}, {collection.spec.dimension} dims); refusing vectors of model "
            f"{model.id} (revision {model.revision or '?'}, {model.dimension} dims)",
            reason="MODEL_MISMATCH",
        )


def _rows(point: Point) -> list[tuple[Any, ...]]:
    """Table rows of one document: its chunks, or one row without a span; text on chunk 0 only."""
    metadata = Jsonb(point.metadata)
    if not point.chunks:
        return [(point.id, 0, None, None, point.vector, point.text, metadata)]
    return [
        (point.id, index, chunk.start, chunk.end, chunk.vector, point.text if index == 0 else "", metadata)
        for index, chunk in enumerate(point.chunks)
    ]


class PointStore:
    def __init__(self, db: Database, collections: CollectionStore, limits: PointLimits) -> None:
        self._db = db
        self._collections = collections
        self._shards = collections.shards
        self.limits = limits

    @property
    def shards(self) -> Shards:
        return self._shards

    async def on_collection(self, name: str, operation: Callable[[Collection], Awaitable[T]]) -> T:
        """Run `operation` on the (possibly cached) collection; if its table vanished (dropped
        or recreated by another replica), refresh once, which raises NOT_FOUND if it is gone.
        A shard the coordinator could not reach is named by its address."""
        collection = await self._collections.get(name, count=False)
        try:
            try:
                return await operation(collection)
            except pg_errors.UndefinedTable:
                self._collections.invalidate(name)
                return await operation(await self._collections.get(name, count=False))
        except Unavailable as exc:
            raise self._shards.named(exc) from None

    def _check_batch(self, size: int, what: str) -> None:
        if size == 0:
            raise InvalidArgument(f"{what} must not be empty")
        if size > self.limits.max_batch_points:
            raise InvalidArgument(f"{size} {what} exceed the limit of {self.limits.max_batch_points} per call")

    def item_problem(self, collection: Collection, point: Point) -> str | None:
        """Why `point` cannot be stored in `collection`, or None."""
        if point.vector_problem:
            return point.vector_problem
        if (point.vector is None) == (not point.chunks):
            return "give either a vector or chunks" if point.chunks else "vector is required"
        if len(point.chunks) > self.limits.max_chunks:
            return f"{len(point.chunks)} chunks exceed the limit of {self.limits.max_chunks} per document"
        dimensions = [chunk.vector.shape[-1] for chunk in point.chunks] or [point.vector.shape[-1]]  # type: ignore[union-attr]
        end = 0
        for index, chunk in enumerate(point.chunks):
            if not (0 <= chunk.start < chunk.end <= len(point.text) and chunk.start <= end):
                return (
                    f"chunks[{index}] spans characters [{chunk.start}, {chunk.end}) but chunks must lie in the "
                    f"text ({len(point.text)} characters), be non-empty, and start at or before where the "
                    f"previous one ended ({end})"
                )
            end = chunk.end
            if chunk.vector.shape[-1] != dimensions[0]:
                return f"chunks[{index}] has dimension {chunk.vector.shape[-1]} but chunks[0] has {dimensions[0]}"
        return self.row_problem(
            collection,
            point.id,
            point.text,
            len(json.dumps(point.metadata, separators=(",", ":"))),
            dimensions[0],
        )

    def row_problem(
        self, collection: Collection, point_id: str, text: str, metadata_bytes: int, dimension: int
    ) -> str | None:
        """The checks every stored point passes, on plain values (shared by Upsert and bulk loads)."""
        id_problem = document_id_problem(point_id)
        if id_problem:
            return id_problem
        if dimension != collection.spec.dimension:
            return (
                f"vector has dimension {dimension} but collection '{collection.spec.name}' "
                f"has dimension {collection.spec.dimension}"
            )
        if len(text) > self.limits.max_text_bytes // 4 and len(text.encode("utf-8")) > self.limits.max_text_bytes:
            return f"text exceeds the limit of {self.limits.max_text_bytes} bytes"
        if "\x00" in text:
            return "text must not contain NUL characters"
        if metadata_bytes > self.limits.max_metadata_bytes:
            return f"metadata exceeds the limit of {self.limits.max_metadata_bytes} bytes as JSON"
        return None

    def where(self, node: Filter) -> tuple[sql.Composable, list[Any]]:
        return compile_filter(node, self.limits.filters)

    async def upsert(self, name: str, points: list[Point], model: ModelIdentity | None, receipt: str = "") -> Upserted:
        """Write valid documents (insert, or replace with all their chunks, by id) in one
        transaction; report invalid ones per item. With a receipt, record it in that same
        transaction, or write nothing when it is already recorded: whoever retries a write
        whose outcome it never learned cannot apply it twice."""
        self._check_batch(len(points), "points")
        if receipt:
            check_receipt(receipt)

        async def write(collection: Collection) -> Upserted:
            check_model(collection, model, writing=True)
            errors: list[ItemError] = []
            latest: dict[str, Point] = {}  # a repeated id: the last one wins, as it would in sequence
            for index, point in enumerate(points):
                problem = self.item_problem(collection, point)
                if problem:
                    errors.append(ItemError(index, point.id, problem))
                else:
                    latest[point.id] = point
            # Sorted by key so concurrent writers lock rows in one order (no deadlocks).
            documents = sorted(latest.values(), key=lambda point: point.id)
            if collection.sharded:
                applied = await self._store_sharded(collection, documents, receipt)
            else:
                applied = await self._store(self._db, collection, documents, receipt)
            if not applied:
                return Upserted(0, [], already_applied=True)
            return Upserted(len(points) - len(errors), errors)

        return await self.on_collection(name, write)

    async def _store(self, db: Database, collection: Collection, documents: list[Point], receipt: str) -> bool:
        """Write `documents` (sorted by id) and record `receipt` in one transaction of `db`;
        False, writing nothing, when the receipt was recorded before."""
        if not documents and not receipt:
            return True
        table, column = sql.Identifier(collection.table), sql.SQL(collection.spec.storage.column_type)
        async with db.transaction() as conn:
            if receipt and not await receipts.record(conn, collection, receipt, len(documents)):
                return False
            if not documents:
                return True
            await conn.execute(keyword.claim_counter(collection))
            await conn.execute(
                sql.SQL(
                    "DELETE FROM {table} t USING unnest(%s::text[], %s::int[]) AS d(id, chunks) "
                    "WHERE t.id = d.id AND t.chunk >= d.chunks"
                ).format(table=table),
                ([p.id for p in documents], [max(1, len(p.chunks)) for p in documents]),
            )
            async with conn.cursor() as cursor:
                await cursor.executemany(
                    sql.SQL(
                        """INSERT INTO {table} (id, chunk, span_start, span_end, embedding, text, metadata)
                           VALUES (%s, %s, %s, %s, %s::{column}, %s, %s)
                           ON CONFLICT (id, chunk) DO UPDATE SET span_start = EXCLUDED.span_start,
                               span_end = EXCLUDED.span_end, embedding = EXCLUDED.embedding,
                               text = EXCLUDED.text, metadata = EXCLUDED.metadata, updated_at = now()"""
                    ).format(table=table, column=column),
                    [row for point in documents for row in _rows(point)],
                )
        return True

    async def _store_sharded(self, collection: Collection, documents: list[Point], receipt: str) -> bool:
        """Each shard's documents in that shard's own transaction, at once. A receipt is
        recorded on every shard, whether or not it owns any of them: a write retried after one
        shard failed is applied on that shard alone, and is applied everywhere exactly when
        every shard holds its receipt. False when every shard had recorded it before."""
        owners = await self._shards.place(self._db, collection, [point.id for point in documents]) if documents else {}
        by_id = {point.id: point for point in documents}

        async def store(shard: Shard) -> bool:
            owned = [by_id[point_id] for point_id in sorted(owners.get(shard.index, []))]
            return await self._store(shard.db, collection, owned, receipt)

        outcomes = await self._shards.each(collection, store, only=None if receipt else set(owners))
        return not receipt or any(outcomes)

    async def recorded_receipts(self, name: str, wanted: list[str]) -> list[str]:
        """Which of `wanted` are recorded, in request order."""
        self._check_batch(len(wanted), "receipts")
        for receipt in wanted:
            check_receipt(receipt)

        async def on_shard(collection: Collection, shard: Shard) -> set[str]:
            async with shard.db.transaction() as conn:
                return await receipts.recorded(conn, collection, wanted)

        async def read(collection: Collection) -> list[str]:
            if collection.sharded:  # recorded when every shard holds it (see _store_sharded)
                found = set.intersection(
                    *await self._shards.each(collection, lambda shard: on_shard(collection, shard))
                )
            else:
                async with self._db.read(read_settings(self.limits)) as conn:
                    found = await receipts.recorded(conn, collection, wanted)
            return [receipt for receipt in wanted if receipt in found]

        return await self.on_collection(name, read)

    async def delete_receipts(self, name: str, prefix: str) -> int:
        if not prefix:
            raise InvalidArgument("prefix must not be empty; receipts are forgotten by their writer's prefix")
        check_receipt(prefix, "prefix")

        async def forget_on(db: Database, collection: Collection) -> int:
            async with db.transaction() as conn:
                return await receipts.forget(conn, collection, prefix)

        async def forget(collection: Collection) -> int:
            if collection.sharded:  # each shard holds a copy: count them once
                return max(await self._shards.each(collection, lambda shard: forget_on(shard.db, collection)))
            return await forget_on(self._db, collection)

        return await self.on_collection(name, forget)

    async def get(self, name: str, ids: list[str], include_vectors: bool) -> tuple[list[Point], list[str]]:
        self._check_batch(len(ids), "ids")

        async def read(collection: Collection) -> dict[str, Point]:
            statement = sql.SQL(
                "SELECT id, text, metadata, {vector} FROM {table} WHERE id = ANY(%s) AND chunk = 0"
            ).format(
                vector=sql.SQL("embedding::vector" if include_vectors else "NULL"),
                table=sql.Identifier(collection.table),
            )
            async with self._db.read(read_settings(self.limits)) as conn:
                cursor = await conn.execute(statement, (ids,))
                return {row[0]: point_from_row(row) for row in await cursor.fetchall()}

        found = await self.on_collection(name, read)
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
                where, params = self.where(node)
            else:
                where, params = sql.SQL("id = ANY(%s)"), [ids]
            statement = sql.SQL(
                "WITH gone AS (DELETE FROM {table} WHERE {where} RETURNING chunk) "
                "SELECT count(*) FILTER (WHERE chunk = 0) FROM gone"
            ).format(table=sql.Identifier(collection.table), where=where)

            async def remove_on(db: Database) -> int:
                async with db.transaction() as conn:
                    await conn.execute(keyword.claim_counter(collection))
                    row = await (await conn.execute(statement, params)).fetchone()
                    return int(row[0]) if row else 0

            if collection.sharded:  # every shard, each in its own transaction (a retry deletes the rest)
                return sum(await self._shards.each(collection, lambda shard: remove_on(shard.db)))
            return await remove_on(self._db)

        return await self.on_collection(name, remove)

    async def scroll(
        self, name: str, node: Filter, limit: int, cursor: str, include_vectors: bool
    ) -> tuple[list[Point], str]:
        """One page of matching points in id order, and the cursor of the next page ("" at the end)."""
        limit = limit or 100
        if not 1 <= limit <= self.limits.max_batch_points:
            raise InvalidArgument(f"limit {limit} is out of range: 1 to {self.limits.max_batch_points}")
        after = pages.decode(cursor, "cursor", "next_cursor") if cursor else None

        async def page(collection: Collection) -> list[Point]:
            where, params = self.where(node)
            statement = sql.SQL(
                "SELECT id, text, metadata, {vector} FROM {table} "
                "WHERE chunk = 0 AND {where} AND ({after}) ORDER BY id LIMIT %s"
            ).format(
                vector=sql.SQL("embedding::vector" if include_vectors else "NULL"),
                table=sql.Identifier(collection.table),
                where=where,
                after=sql.SQL("TRUE" if after is None else "id > %s"),
            )
            async with self._db.read(read_settings(self.limits)) as conn:
                rows = await (
                    await conn.execute(statement, [*params, *([after] if after else []), limit + 1])
                ).fetchall()
            return [point_from_row(row) for row in rows]

        points = await self.on_collection(name, page)
        if len(points) > limit:
            return points[:limit], pages.encode(points[limit - 1].id)
        return points, ""
