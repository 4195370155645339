"""The api's own database: API keys, ingest jobs, their staged documents and dead letters, and
procrastinate's queue (tenant quotas and rate limits live in Redis). One PostgreSQL database,
by default the same server as the search service's, with tables no other service reads.

`open_pool` brings the schema up to date before anything uses it; `JOBS` and `KEYS` name the
database's failures to callers by what was being done (through the mesh's one mapping,
`meshsearch_common.database`).
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from meshsearch_api.database import schema
from meshsearch_common.database import DatabaseRole
from meshsearch_common.database_pool import ReconnectingPool

JOBS = DatabaseRole("the jobs database", "JOBS_DATABASE_UNAVAILABLE", "MESHSEARCH_API_JOBS_POOL_SIZE")
KEYS = DatabaseRole("the key store", "KEY_STORE_UNAVAILABLE", "MESHSEARCH_API_JOBS_POOL_SIZE")


async def open_pool(conninfo: str, size: int, timeout_s: float = 30.0) -> AsyncConnectionPool:
    """A pool on the api's database, once the database answers and its schema is current."""
    pool = ReconnectingPool(conninfo, min_size=1, max_size=size, open=False, kwargs={"autocommit": True})
    await pool.open(wait=True, timeout=timeout_s)
    try:
        async with pool.connection() as conn:
            await schema.migrate(conn)
    except BaseException:
        await pool.close()
        raise
    return pool
