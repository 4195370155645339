"""Wires the search service together and runs it under the common server bootstrap."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

import grpc
import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector_async

from meshsearch.search.v1 import search_pb2, search_pb2_grpc
from meshsearch_common.database_pool import ReconnectingPool
from meshsearch_common.limits import RequestLimits
from meshsearch_common.readiness import Readiness
from meshsearch_search.bulk import BulkLoader, BulkSettings
from meshsearch_search.collections import CollectionStore
from meshsearch_search.db import Database
from meshsearch_search.grpc_service import Stores, VectorStoreServicer
from meshsearch_search.index_keeper import IndexKeeper
from meshsearch_search.points import PointLimits, PointStore
from meshsearch_search.retrieval import Retriever
from meshsearch_search.schema import migrate
from meshsearch_search.settings import SearchSettings
from meshsearch_search.shards import EfTiers, Shard, Shards, shard_role, where_of

log = logging.getLogger(__name__)


async def _migrate_when_reachable(url: str, timeout_s: float) -> int:
    """Apply migrations, waiting for PostgreSQL to accept connections (it may start after us)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5) as conn:
                return await migrate(conn)
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("waiting for PostgreSQL", extra={"error": str(exc).strip()})
            await asyncio.sleep(1)


class SearchApp:
    name = "search"

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self._stores: Readiness[Stores] = Readiness("search database connection")
        self._pools: list[psycopg_pool.AsyncConnectionPool] = []
        self._background: set[asyncio.Task[None]] = set()

    def request_limits(self) -> RequestLimits:
        return RequestLimits(default_bytes=self.settings.max_request_bytes)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        search_pb2_grpc.add_VectorStoreServiceServicer_to_server(VectorStoreServicer(self._stores), server)
        return [search_pb2.DESCRIPTOR.services_by_name["VectorStoreService"].full_name]

    async def _open_pool(self, url: str, name: str, autocommit: bool) -> psycopg_pool.AsyncConnectionPool:
        settings = self.settings
        pool = ReconnectingPool(
            url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.pool_timeout_s,
            max_waiting=settings.pool_max_waiting,
            configure=register_vector_async,
            # No per-checkout health check: it costs a round trip on every query. A connection
            # broken by a PostgreSQL restart fails its one call (UNAVAILABLE, retried by clients
            # for idempotent methods) and is then discarded by the pool.
            kwargs={"application_name": f"meshsearch-search-{name}", "autocommit": autocommit},
            name=name,
            open=False,
        )
        await pool.open(wait=True, timeout=settings.startup_timeout_s)
        self._pools.append(pool)
        return pool

    async def start(self) -> None:
        settings = self.settings
        # Migrate first: registering the vector type on pool connections needs the extension.
        version = await _migrate_when_reachable(settings.database_url, settings.startup_timeout_s)
        log.info("schema ready", extra={"schema_version": version})
        write_pool = await self._open_pool(settings.database_url, "write", autocommit=False)
        read_pool = await self._open_pool(settings.read_database_url or settings.database_url, "read", autocommit=True)
        db = Database(write_pool, read_pool, connect_timeout_s=settings.pool_timeout_s)
        shards = await self._open_shards(write_pool)
        collections = CollectionStore(db, settings.max_dimension, shards)
        points = PointStore(db, collections, PointLimits.from_settings(settings))
        keeper = IndexKeeper(db, collections, settings.index_build_memory, settings.index_build_workers)
        bulk = BulkLoader(db, collections, points, keeper, BulkSettings.from_settings(settings))
        # A batch may use all but one of the read connections, so single queries still get one.
        concurrency = max(1, settings.pool_max_size - 1)
        self._stores.set(Stores(collections, points, Retriever(db, points), bulk, keeper, concurrency))
        sweeper = asyncio.create_task(keeper.keep(settings.index_sweep_interval_s), name="index-sweep")
        self._background.add(sweeper)
        sweeper.add_done_callback(self._background.discard)

    async def _open_shards(self, coordinator: psycopg_pool.AsyncConnectionPool) -> Shards:
        """The shard servers of MESHSEARCH_SEARCH_SHARD_URLS: each brought to this schema, with a
        pool for the writes routed to it, and declared to the coordinator as a foreign server."""
        settings = self.settings
        urls = [url.strip() for url in settings.shard_urls.split(",") if url.strip()]
        opened = []
        for index, url in enumerate(urls):
            version = await _migrate_when_reachable(url, settings.startup_timeout_s)
            log.info("shard ready", extra={"shard": index, "at": where_of(url), "schema_version": version})
            pool = await self._open_pool(url, f"shard-{index}", autocommit=False)
            role = shard_role(index)
            opened.append(Shard(index, url, Database(pool, pool, connect_timeout_s=settings.pool_timeout_s, role=role)))
        shards = Shards(
            opened, EfTiers(settings.shard_ef_search or settings.default_ef_search, settings.ef_search_tiers)
        )
        if opened:
            async with coordinator.connection() as conn:
                await conn.set_autocommit(True)
                try:
                    await shards.declare(conn, settings.shard_connect_timeout_s, settings.max_scan_tuples)
                finally:
                    await conn.set_autocommit(False)
        return shards

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        for pool in self._pools:
            await pool.close()


def create_app() -> SearchApp:
    return SearchApp(SearchSettings())
