"""The api's database (jobs, their queue, API keys): opening a pool with the schema brought
up to date, and what its failures mean to callers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from meshsearch_api.ingest import schema
from meshsearch_common.errors import Unavailable


async def open_pool(conninfo: str, size: int, timeout_s: float = 30.0) -> AsyncConnectionPool:
    """A pool on the jobs database, once the database answers and its schema is current."""
    pool = AsyncConnectionPool(conninfo, min_size=1, max_size=size, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=timeout_s)
    try:
        async with pool.connection() as conn:
            await schema.migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool


@asynccontextmanager
async def database_errors() -> AsyncIterator[None]:
    """The database failing is UNAVAILABLE to callers (retry later), never INTERNAL."""
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise Unavailable(f"the jobs database is unavailable: {exc}", reason="JOBS_DATABASE_UNAVAILABLE") from exc
