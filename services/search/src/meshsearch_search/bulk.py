"""Bulk loads with binary COPY, in one transaction: all points are written, or none.

Two paths, chosen by whether the collection is empty when the load starts:
- empty (the initial load, the common case): the HNSW index is deferred (`index_keeper`:
  dropped concurrently, so queries are never blocked; they use exact search meanwhile), rows
  are COPYed straight into the collection's table, and the index is built once at the end.
  Later duplicates of an id are kept aside and applied after the COPY, so the last one wins;
- not empty: rows are COPYed into a temporary staging table and merged with ON CONFLICT into
  the live index (sorted to keep the last duplicate only when the stream had duplicates).
Writers are excluded for the duration of the transaction (SHARE ROW EXCLUSIVE); readers are not.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from meshsearch_common.errors import InvalidArgument
from meshsearch_search.collections import CollectionStore, hnsw_index_sql
from meshsearch_search.copy_format import pack_vectors, use_json_text, use_packed_vectors
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection, ModelIdentity, PointBatch
from meshsearch_search.index_keeper import MAX_LEASE_S, MIN_LEASE_S, IndexKeeper
from meshsearch_search.points import PointStore, check_model
from meshsearch_search.settings import SearchSettings
from meshsearch_search.shards import Shard

# Batches queued per shard in a sharded bulk load: enough to keep every shard busy, few enough
# that a slow shard holds the stream back instead of the service's memory filling.
_SHARD_QUEUE_BATCHES = 4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkResult:
    upserted_count: int
    index_build_s: float  # ANALYZE + HNSW build of an initial load; 0 when the live index was updated


@dataclass(frozen=True)
class BulkSettings:
    """How bulk loads run; built from SearchSettings, the one source of their values."""

    max_statement_s: float

    @classmethod
    def from_settings(cls, settings: SearchSettings) -> BulkSettings:
        return cls(settings.bulk_max_statement_s)


class _Rows:
    """Validates batches and turns them into COPY rows: vectors checked and packed in one numpy
    pass, metadata passed through as the JSON text it arrived as (checked to be an object)."""

    def __init__(self, points: PointStore, collection: Collection) -> None:
        self._points = points
        self._collection = collection
        self.count = 0
        self.seen: set[str] = set()
        self.duplicates = False
        self.copy_order: list[str] = []  # ids in the order COPY received them, to name bad rows

    def _fail(self, offset: int, point_id: str, problem: str) -> InvalidArgument:
        return InvalidArgument(f"point {self.count + offset} (id {point_id!r}): {problem}; nothing was written")

    def rows(self, batch: PointBatch) -> list[tuple[Any, ...]]:
        dimension = batch.vectors.shape[1] if batch.vectors.ndim == 2 else -1
        finite = np.asarray(np.isfinite(batch.vectors).all(axis=1)) if batch.ids else np.ones(0, dtype=np.bool_)
        for offset, (point_id, text, metadata_json) in enumerate(
            zip(batch.ids, batch.texts, batch.metadata_json, strict=True)
        ):
            problem = self._points.row_problem(self._collection, point_id, text, len(metadata_json), dimension)
            if problem is None and not finite[offset]:
                problem = "vector contains NaN or infinite values"
            # An object is all that is checked here; PostgreSQL's parser validates the JSON itself.
            if problem is None and not metadata_json.lstrip().startswith("{"):
                problem = "metadata_json is not a JSON object"
            if problem:
                raise self._fail(offset, point_id, problem)
        self.count += len(batch.ids)
        vectors = pack_vectors(batch.vectors, self._collection.spec.storage)
        return list(zip(batch.ids, vectors, batch.texts, batch.metadata_json, strict=True))

    def copied(self, point_id: str) -> None:
        self.copy_order.append(point_id)

    def invalid_json(self, error: psycopg.errors.DataError) -> InvalidArgument:
        """Name the point whose metadata PostgreSQL refused (COPY reports the line)."""
        match = re.search(r"COPY [^,]+, line (\d+)", error.diag.context or "")
        line = int(match.group(1)) if match else 0
        point_id = self.copy_order[line - 1] if 0 < line <= len(self.copy_order) else "?"
        detail = error.diag.message_primary or str(error)
        return InvalidArgument(f"point id {point_id!r}: {detail}; nothing was written")

    def is_duplicate(self, point_id: str) -> bool:
        """Record `point_id`; True when it was seen before in this load."""
        if point_id in self.seen:
            self.duplicates = True
            return True
        self.seen.add(point_id)
        return False


def _part(batch: PointBatch, rows: npt.NDArray[np.intp]) -> PointBatch:
    """The points of `batch` at positions `rows`, in order."""
    return PointBatch(
        ids=[batch.ids[row] for row in rows],
        vectors=batch.vectors[rows],
        texts=[batch.texts[row] for row in rows],
        metadata_json=[batch.metadata_json[row] for row in rows],
    )


class BulkLoader:
    def __init__(
        self,
        db: Database,
        collections: CollectionStore,
        points: PointStore,
        keeper: IndexKeeper,
        settings: BulkSettings,
    ) -> None:
        self._db = db
        self._collections = collections
        self._points = points
        self._keeper = keeper
        self._settings = settings

    async def load(self, name: str, batches: AsyncIterator[PointBatch], model: ModelIdentity | None) -> BulkResult:
        collection = await self._collections.get(name, count=True)
        check_model(collection, model, writing=True)
        if collection.sharded:
            return await self._load_sharded(collection, batches)
        lease_s = min(max(self._settings.max_statement_s, MIN_LEASE_S), MAX_LEASE_S)
        initial = collection.point_count == 0 and await self._keeper.defer(name, lease_s) is not None
        try:
            written, _ = await self._write(self._db, collection, batches, initial)
        finally:
            # Never leave a collection without its index, whether the load succeeded or not.
            build_s = await self._keeper.build(await self._keeper.end_deferral(name)) if initial else 0.0
        return BulkResult(written, build_s)

    async def _load_sharded(self, collection: Collection, batches: AsyncIterator[PointBatch]) -> BulkResult:
        """Each shard's rows COPYed into it in its own transaction, all shards at once, as the
        batches arrive (each batch split by the coordinator's hash of its ids; a slow shard holds
        the stream back, with a few batches queued per shard). The shards commit together, once
        all have written; a load that failed between their commits is retried whole (a bulk
        load is an upsert: repeating it is harmless).

        Loading an empty collection, each shard drops its HNSW index in the load's transaction
        and builds it at the end of it, as `IndexKeeper` does for one server: the shard's table
        is held exclusively meanwhile, and a failed load leaves the index as it was."""
        shards = self._collections.shards
        queues: dict[int, asyncio.Queue[PointBatch | None]] = {
            shard.index: asyncio.Queue(maxsize=_SHARD_QUEUE_BATCHES) for shard in shards.of(collection)
        }
        initial = collection.point_count == 0

        async def feed() -> None:
            async for batch in batches:
                owners = np.asarray(await shards.place_rows(self._db, collection, batch.ids))
                for index, queue in queues.items():
                    rows = np.flatnonzero(owners == index)
                    if len(rows):
                        await queue.put(_part(batch, rows))
            for queue in queues.values():
                await queue.put(None)

        async def drain(queue: asyncio.Queue[PointBatch | None]) -> AsyncIterator[PointBatch]:
            while (batch := await queue.get()) is not None:
                yield batch

        # Every shard holds its transaction open until all have written (and built): a bad row
        # or a failed shard then rolls every shard back. Only a failure between the shards'
        # commits can leave some of the load written, which the load's retry completes.
        written_everywhere = asyncio.Barrier(len(queues))

        async def load(shard: Shard) -> tuple[int, float]:
            return await self._write(
                shard.db,
                collection,
                drain(queues[shard.index]),
                initial,
                rebuild_index=True,
                require_rows=False,
                before_commit=written_everywhere.wait,
            )

        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(feed())
                loads = [group.create_task(load(shard)) for shard in shards.of(collection)]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first failure; the rest were cancelled by it
        outcomes = [task.result() for task in loads]
        written = sum(count for count, _ in outcomes)
        if written == 0:
            raise InvalidArgument("the bulk load carried no points")
        return BulkResult(written, max(build_s for _, build_s in outcomes))

    async def _write(
        self,
        db: Database,
        collection: Collection,
        batches: AsyncIterator[PointBatch],
        initial: bool,
        *,
        rebuild_index: bool = False,
        require_rows: bool = True,
        before_commit: Callable[[], Awaitable[object]] | None = None,
    ) -> tuple[int, float]:
        """Load `batches` into `collection`'s table on `db` in one transaction; (points
        written, seconds spent building the index). `initial`: COPY straight into the table,
        whose index is deferred, or with `rebuild_index`, dropped and built in this transaction."""
        table = sql.Identifier(collection.table)
        rows = _Rows(self._points, collection)
        build_s = 0.0
        async with db.transaction(max_statement_s=self._settings.max_statement_s) as conn:
            await conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table))
            if initial:
                still_empty = await conn.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(table))
                initial = bool((await still_empty.fetchone())[0])  # type: ignore[index]
            if initial and rebuild_index:
                await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(collection.hnsw_index)))
            if initial:
                late: dict[str, tuple[Any, ...]] = {}
                # Register the pass-through dumpers before the cursor exists (it snapshots them).
                types = ["text", use_packed_vectors(conn, collection.spec.storage), "text", use_json_text(conn)]
                try:
                    async with conn.cursor().copy(
                        sql.SQL("COPY {} (id, embedding, text, metadata) FROM STDIN WITH (FORMAT BINARY)").format(table)
                    ) as copy:
                        copy.set_types(types)
                        async for batch in batches:
                            for index, row in enumerate(rows.rows(batch)):
                                if rows.is_duplicate(row[0]):
                                    # Applied after the COPY, so the last occurrence wins.
                                    late[row[0]] = (batch.vectors[index], row[2], row[3], row[0])
                                else:
                                    rows.copied(row[0])
                                    await copy.write_row(row)
                except psycopg.errors.DataError as exc:
                    raise rows.invalid_json(exc) from None
                if late:
                    update = sql.SQL(
                        "UPDATE {} SET embedding = %s::{column}, text = %s, metadata = %s::jsonb, updated_at = now() "
                        "WHERE id = %s AND chunk = 0"
                    ).format(table, column=sql.SQL(collection.spec.storage.column_type))
                    async with conn.cursor() as cursor:
                        await cursor.executemany(update, list(late.values()))
                written = len(rows.seen)
                if rebuild_index:
                    build_s = await self._build_in(conn, collection)
            else:
                written = await self._merge(conn, collection, batches, rows)
            if before_commit is not None:
                await before_commit()
        if rows.count == 0 and require_rows:
            raise InvalidArgument("the bulk load carried no points")
        return written, build_s

    async def _build_in(self, conn: psycopg.AsyncConnection, collection: Collection) -> float:
        """ANALYZE and build the HNSW index inside the caller's transaction; the seconds it took."""
        started = time.perf_counter()
        await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(collection.table)))
        await self._keeper.use_build_settings(conn, local=True)
        await conn.execute(hnsw_index_sql(collection))
        return time.perf_counter() - started

    async def _merge(self, conn, collection: Collection, batches: AsyncIterator[PointBatch], rows: _Rows) -> int:  # type: ignore[no-untyped-def]
        column = collection.spec.storage.column_type
        await conn.execute(
            sql.SQL(
                "CREATE TEMP TABLE meshsearch_staging (seq bigint, id text, embedding {column}({dimension}), "
                "text text, metadata jsonb) ON COMMIT DROP"
            ).format(column=sql.SQL(column), dimension=sql.Literal(collection.spec.dimension))
        )
        # Register the pass-through dumpers before the cursor exists (it snapshots them).
        types = ["int8", "text", use_packed_vectors(conn, collection.spec.storage), "text", use_json_text(conn)]
        try:
            async with conn.cursor().copy(
                "COPY meshsearch_staging (seq, id, embedding, text, metadata) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(types)
                async for batch in batches:
                    for row in rows.rows(batch):
                        rows.is_duplicate(row[0])
                        rows.copied(row[0])
                        await copy.write_row((len(rows.copy_order), *row))
        except psycopg.errors.DataError as exc:
            raise rows.invalid_json(exc) from None
        source = (
            "SELECT DISTINCT ON (id) id, embedding, text, metadata FROM meshsearch_staging ORDER BY id, seq DESC"
            if rows.duplicates
            else "SELECT id, embedding, text, metadata FROM meshsearch_staging"
        )
        table = sql.Identifier(collection.table)
        # A document loaded here is one chunk: the other chunks of a document it replaces go.
        await conn.execute(
            sql.SQL("DELETE FROM {table} t USING meshsearch_staging s WHERE t.id = s.id AND t.chunk > 0").format(
                table=table
            )
        )
        cursor = await conn.execute(
            sql.SQL(
                """INSERT INTO {table} (id, embedding, text, metadata) {source}
                   ON CONFLICT (id, chunk) DO UPDATE SET embedding = EXCLUDED.embedding, text = EXCLUDED.text,
                       metadata = EXCLUDED.metadata, span_start = NULL, span_end = NULL, updated_at = now()"""
            ).format(table=table, source=sql.SQL(source))
        )
        return int(cursor.rowcount)
