"""The search service's core (stores and retriever) on the session's real PostgreSQL, as the
integration tests use it: migrated, with a write and a read pool like the service's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
import psycopg_pool
from pgvector.psycopg import register_vector_async

from meshsearch_search.collections import CollectionStore
from meshsearch_search.db import Database
from meshsearch_search.points import PointLimits, PointStore
from meshsearch_search.retrieval import Retriever
from meshsearch_search.schema import migrate


@dataclass(frozen=True)
class SearchCore:
    db: Database
    collections: CollectionStore
    points: PointStore
    retriever: Retriever


@asynccontextmanager
async def search_core(database_url: str, limits: PointLimits, pool_size: int = 4) -> AsyncIterator[SearchCore]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await migrate(conn)
    pools = [
        psycopg_pool.AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            configure=register_vector_async,
            kwargs={"autocommit": autocommit},
            open=False,
        )
        for autocommit in (False, True)
    ]
    for pool in pools:
        await pool.open(wait=True)
    try:
        db = Database(pools[0], pools[1])
        collections = CollectionStore(db, 4000)
        points = PointStore(db, collections, limits)
        yield SearchCore(db, collections, points, Retriever(db, points))
    finally:
        for pool in pools:
            await pool.close()
