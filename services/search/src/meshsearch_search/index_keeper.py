"""IndexKeeper: when a collection's HNSW index is dropped, deferred and (re)built.

Inserting rows one batch at a time into a live HNSW graph costs far more than building the
graph once over the same rows (pgvector issue #430). During an ingest job of short texts into
an empty collection on two cores, graph inserts took about 80% of PostgreSQL's CPU, and
PostgreSQL twice the embedder's (docs/benchmarks.md). So a writer loading an empty collection
defers its index: the index is dropped, rows go in unindexed (queries scan exactly meanwhile,
still correct), and the graph is built once at the end.

A deferral is a lease stored in `meshsearch_collections.index_deferred_until`, so it outlives
the processes involved: the writer (a BulkUpsert, or an ingest job's workers) renews it while
loading and ends it with `build`/`end_deferral`. If the writer dies, the lease runs out and the
periodic `sweep` builds the index; the sweep also rebuilds indexes that a crash left missing
or invalid. A session advisory lock per collection makes one builder at a time, across
replicas, and keeps a deferral from dropping an index while it is being built.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import psycopg
from psycopg import sql

from meshsearch_common.errors import InvalidArgument
from meshsearch_search.collections import CollectionStore, hnsw_index_sql
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection

log = logging.getLogger(__name__)

# Advisory lock space of index builds ("hnsw"); the second key is the collection's id.
_BUILD_LOCK_SPACE = 0x686E7377
MIN_LEASE_S, MAX_LEASE_S = 1.0, 3600.0
# A deferral waits this long for another deferral (brief), not for a build (minutes).
_DEFER_LOCK_WAIT_S = 5.0


class IndexKeeper:
    def __init__(self, db: Database, collections: CollectionStore, build_memory: str, build_workers: int) -> None:
        self._db = db
        self._collections = collections
        self.build_memory = build_memory
        self.build_workers = build_workers
        self._builds: set[asyncio.Task[float]] = set()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[psycopg.AsyncConnection]:
        """A write connection in autocommit: (DROP|CREATE) INDEX CONCURRENTLY cannot run in a transaction."""
        async with self._db.write_pool.connection() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                await conn.set_autocommit(False)

    @asynccontextmanager
    async def _build_lock(
        self, conn: psycopg.AsyncConnection, collection: Collection, wait_s: float | None
    ) -> AsyncIterator[bool]:
        """Hold the collection's build lock (True), waiting for it up to `wait_s` seconds (None:
        as long as it takes; 0: not at all); False when another session kept it longer."""
        keys = (_BUILD_LOCK_SPACE, collection.id % 2**31)
        if wait_s is None:
            await conn.execute("SELECT pg_advisory_lock(%s, %s)", keys)
            locked = True
        elif wait_s == 0:
            row = await (await conn.execute("SELECT pg_try_advisory_lock(%s, %s)", keys)).fetchone()
            locked = bool(row and row[0])
        else:
            await conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(wait_s * 1000))}ms",))
            try:
                await conn.execute("SELECT pg_advisory_lock(%s, %s)", keys)
                locked = True
            except psycopg.errors.LockNotAvailable:
                locked = False
            finally:
                await conn.execute("RESET lock_timeout")
        try:
            yield locked
        finally:
            if locked:
                await conn.execute("SELECT pg_advisory_unlock(%s, %s)", keys)

    async def defer(self, name: str, lease_s: float) -> datetime | None:
        """Hold off the index of collection `name` for `lease_s` seconds, or renew a deferral in
        force; the lease's end, or None when the collection already holds points (its index
        stays) or its index is being built."""
        if not MIN_LEASE_S <= lease_s <= MAX_LEASE_S:
            raise InvalidArgument(f"lease {lease_s:g} s is out of range: {MIN_LEASE_S:g} s to {MAX_LEASE_S:g} s")
        collection = await self._collections.get(name, count=True)
        if collection.sharded:
            return None  # each shard keeps its own index, built with its table; writers load into it
        async with self._session() as conn, self._build_lock(conn, collection, _DEFER_LOCK_WAIT_S) as locked:
            if not locked:
                return None
            row = await (
                await conn.execute(
                    """UPDATE meshsearch_collections
                          SET index_deferred_until = greatest(index_deferred_until, now() + make_interval(secs => %s))
                        WHERE id = %s AND (index_deferred_until > now() OR %s)
                    RETURNING index_deferred_until""",
                    (lease_s, collection.id, collection.point_count == 0),
                )
            ).fetchone()
            if row is None:
                return None
            await conn.execute(
                sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(collection.hnsw_index))
            )
        self._collections.invalidate(name)
        return row[0]  # type: ignore[no-any-return]

    async def end_deferral(self, name: str) -> Collection:
        """End any deferral of `name`'s index (the sweep, or `build`, then builds it)."""
        collection = await self._collections.get(name, count=False)
        async with self._db.transaction() as conn:
            await conn.execute(
                "UPDATE meshsearch_collections SET index_deferred_until = NULL WHERE id = %s", (collection.id,)
            )
        self._collections.invalidate(name)
        return collection

    async def build_soon(self, name: str) -> None:
        """End any deferral of `name`'s index and build it in the background (a 1M-point graph
        takes minutes); if this process dies first, the sweep builds it."""
        collection = await self.end_deferral(name)
        task = asyncio.create_task(self._build_or_log(collection), name=f"build-index-{collection.id}")
        self._builds.add(task)
        task.add_done_callback(self._builds.discard)

    async def build(self, collection: Collection, wait: bool = True) -> float:
        """Refresh planner statistics, then build the HNSW index if it is missing or invalid,
        without blocking queries; the seconds it took (0 when there was nothing to do, or
        another session was building and `wait` is False). Statistics come first: filtered
        queries plan with them while the build runs."""
        if collection.sharded:
            return 0.0  # built on every shard with its table, never deferred (see `defer`)
        started = time.perf_counter()
        async with self._session() as conn, self._build_lock(conn, collection, None if wait else 0) as locked:
            state = await _index_state(conn, collection) if locked else "valid"
            if state == "valid":
                return 0.0
            try:
                await conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(collection.table)))
                await self.use_build_settings(conn, local=False)
                if state == "invalid":  # left behind by a crashed build
                    await conn.execute(
                        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(collection.hnsw_index))
                    )
                await conn.execute(hnsw_index_sql(collection, concurrently=True))
            finally:
                await conn.execute("RESET maintenance_work_mem; RESET max_parallel_maintenance_workers")
        self._collections.invalidate(collection.spec.name)
        elapsed = time.perf_counter() - started
        log.info("hnsw index built", extra={"collection": collection.spec.name, "seconds": round(elapsed, 2)})
        return elapsed

    async def use_build_settings(self, conn: psycopg.AsyncConnection, *, local: bool) -> None:
        """The memory and parallel workers of an HNSW build, for the session or (`local`) the
        transaction: builds are the one statement that should use far more than work_mem."""
        await conn.execute(
            "SELECT set_config('maintenance_work_mem', %s, %s), set_config('max_parallel_maintenance_workers', %s, %s)",
            (self.build_memory, local, str(self.build_workers), local),
        )

    async def _build_or_log(self, collection: Collection) -> float:
        try:
            return await self.build(collection, wait=False)
        except Exception:  # noqa: BLE001 (the sweep tries again)
            log.warning("hnsw index build failed", extra={"collection": collection.spec.name}, exc_info=True)
            return 0.0

    async def sweep(self) -> int:
        """Build the indexes that are missing or invalid and not deferred (a lease ran out, or a
        crash interrupted a load or a build); how many were built."""
        built = 0
        for collection in await self._collections.every():
            if not collection.index_ready and not collection.index_deferred:
                log.warning("building hnsw index left unbuilt", extra={"collection": collection.spec.name})
                built += await self.build(collection, wait=False) > 0
        return built

    async def keep(self, interval_s: float) -> None:
        """Sweep now and then every `interval_s` seconds, for the life of the service."""
        while True:
            try:
                await self.sweep()
            except Exception:  # noqa: BLE001 (a failed sweep is retried at the next interval)
                log.warning("index sweep failed", exc_info=True)
            await asyncio.sleep(interval_s)


async def _index_state(conn: psycopg.AsyncConnection, collection: Collection) -> str:
    """'valid', 'invalid' or 'missing'."""
    cursor = await conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid WHERE x.relname = %s",
        (collection.hnsw_index,),
    )
    row = await cursor.fetchone()
    return "missing" if row is None else ("valid" if row[0] else "invalid")
