"""Opening the jobs database: a pool, and the schema brought up to date."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from meshsearch_api.ingest import schema


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
