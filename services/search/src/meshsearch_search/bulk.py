"""Bulk loads: binary COPY into a staging table, merged into the collection in one transaction.

Rows stream into a temporary (unlogged, session-local) staging table as batches arrive, so a
load of any size holds one transaction and constant memory. At the end, one INSERT ... SELECT
merges them (later duplicates of an id win) with ON CONFLICT replacing existing points.

When the load is at least as large as what the collection already holds, the HNSW index is
dropped before the merge and rebuilt after it (CREATE INDEX CONCURRENTLY, so queries keep
working, by exact search, meanwhile): building an HNSW index once is several times cheaper than
inserting the same rows into a live one (pgvector issue #430).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from psycopg import sql
from psycopg.types.json import Jsonb

from meshsearch_common.errors import InvalidArgument
from meshsearch_search.collections import COLUMN_TYPES, CollectionStore, hnsw_index_sql
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection, ModelIdentity, Point
from meshsearch_search.points import PointStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BulkResult:
    upserted_count: int
    index_rebuilt: bool
    index_build_s: float


@dataclass(frozen=True)
class BulkSettings:
    max_statement_s: float = 3600.0
    index_build_memory: str = "1GB"
    index_build_workers: int = 2


class BulkLoader:
    def __init__(self, db: Database, collections: CollectionStore, points: PointStore, settings: BulkSettings) -> None:
        self._db = db
        self._collections = collections
        self._points = points
        self._settings = settings

    async def load(self, name: str, batches: AsyncIterator[list[Point]], model: ModelIdentity | None) -> BulkResult:
        collection = await self._collections.get(name, count=True)
        self._points.model_check(collection, model)
        column = COLUMN_TYPES[collection.spec.storage]
        table = sql.Identifier(collection.table)
        async with self._db.transaction(max_statement_s=self._settings.max_statement_s) as conn:
            await conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE meshsearch_staging (seq bigint, id text, embedding {column}({dimension}), "
                    "text text, metadata jsonb) ON COMMIT DROP"
                ).format(column=sql.SQL(column), dimension=sql.Literal(collection.spec.dimension))
            )
            staged = 0
            async with conn.cursor().copy(
                "COPY meshsearch_staging (seq, id, embedding, text, metadata) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["int8", "text", "vector", "text", "jsonb"])
                async for batch in batches:
                    for point in batch:
                        problem = self._points.item_problem(collection, point)
                        if problem:
                            raise InvalidArgument(f"point {staged} (id {point.id!r}): {problem}; nothing was written")
                        await copy.write_row((staged, point.id, point.vector, point.text, Jsonb(point.metadata)))
                        staged += 1
            if staged == 0:
                raise InvalidArgument("the bulk load carried no points")
            rebuild = staged >= collection.point_count
            if rebuild:
                await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(collection.hnsw_index)))
            cursor = await conn.execute(
                sql.SQL(
                    """INSERT INTO {table} (id, embedding, text, metadata)
                       SELECT DISTINCT ON (id) id, embedding, text, metadata
                         FROM meshsearch_staging ORDER BY id, seq DESC
                       ON CONFLICT (id) DO UPDATE SET embedding = EXCLUDED.embedding, text = EXCLUDED.text,
                           metadata = EXCLUDED.metadata, updated_at = now()"""
                ).format(table=table)
            )
            written = cursor.rowcount
        build_s = await self.build_index(collection) if rebuild else 0.0
        return BulkResult(written, rebuild, build_s)

    async def build_index(self, collection: Collection) -> float:
        """(Re)build the HNSW index without blocking queries; returns the seconds it took."""
        started = time.perf_counter()
        async with self._db.write_pool.connection() as conn:
            await conn.set_autocommit(True)  # CREATE INDEX CONCURRENTLY cannot run in a transaction
            try:
                await conn.execute(
                    "SELECT set_config('maintenance_work_mem', %s, false), "
                    "set_config('max_parallel_maintenance_workers', %s, false)",
                    (self._settings.index_build_memory, str(self._settings.index_build_workers)),
                )
                if await _index_state(conn, collection) == "invalid":  # left behind by a crashed build
                    await conn.execute(
                        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(collection.hnsw_index))
                    )
                await conn.execute(hnsw_index_sql(collection, concurrently=True))
            finally:
                await conn.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
                await conn.set_autocommit(False)
        elapsed = time.perf_counter() - started
        log.info("hnsw index built", extra={"collection": collection.spec.name, "seconds": round(elapsed, 2)})
        return elapsed

    async def repair_indexes(self) -> None:
        """Rebuild HNSW indexes a crash left missing or invalid (run at start-up, in the background)."""
        for collection in await self._collections.list():
            if not collection.index_ready:
                log.warning("rebuilding hnsw index left unfinished", extra={"collection": collection.spec.name})
                await self.build_index(collection)


async def _index_state(conn, collection: Collection) -> str:  # type: ignore[no-untyped-def]
    """'valid', 'invalid' or 'missing'."""
    cursor = await conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid WHERE x.relname = %s",
        (collection.hnsw_index,),
    )
    row = await cursor.fetchone()
    return "missing" if row is None else ("valid" if row[0] else "invalid")
