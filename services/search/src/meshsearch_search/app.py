"""Wires the search service together and runs it under the common server bootstrap."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc
import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector_async

from meshsearch.search.v1 import search_pb2, search_pb2_grpc
from meshsearch_common.readiness import Readiness
from meshsearch_search.collections import CollectionStore
from meshsearch_search.grpc_service import Stores, VectorStoreServicer
from meshsearch_search.points import PointLimits, PointStore
from meshsearch_search.schema import migrate
from meshsearch_search.settings import SearchSettings

log = logging.getLogger(__name__)


class SearchApp:
    name = "search"

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self._stores: Readiness[Stores] = Readiness("search database connection")
        self._pool: psycopg_pool.AsyncConnectionPool | None = None

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        search_pb2_grpc.add_VectorStoreServiceServicer_to_server(VectorStoreServicer(self._stores), server)
        return [search_pb2.DESCRIPTOR.services_by_name["VectorStoreService"].full_name]

    async def start(self) -> None:
        settings = self.settings
        # Migrate first: registering the vector type on pool connections needs the extension.
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
            version = await migrate(conn)
        log.info("schema ready", extra={"schema_version": version})
        self._pool = psycopg_pool.AsyncConnectionPool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            timeout=settings.pool_timeout_s,
            configure=register_vector_async,
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            open=False,
        )
        await self._pool.open(wait=True, timeout=30)
        collections = CollectionStore(self._pool, settings.max_dimension)
        points = PointStore(
            self._pool,
            collections,
            PointLimits(
                max_batch_points=settings.max_batch_points,
                max_text_bytes=settings.max_text_bytes,
                max_metadata_bytes=settings.max_metadata_bytes,
                max_k=settings.max_k,
                max_ef_search=settings.max_ef_search,
                default_ef_search=settings.default_ef_search,
            ),
        )
        self._stores.set(Stores(collections, points))

    async def stop(self) -> None:
        if self._pool:
            await self._pool.close()


def create_app() -> SearchApp:
    return SearchApp(SearchSettings())
