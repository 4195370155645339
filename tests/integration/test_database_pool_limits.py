"""A saturated connection pool answers promptly, within the caller's deadline, with a status
that says what to do: RESOURCE_EXHAUSTED (busy, retry) rather than a hang or UNAVAILABLE."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import psycopg_pool
import pytest

from meshsearch_common import context
from meshsearch_common.errors import ResourceExhausted
from meshsearch_search.db import Database


@pytest.fixture
async def one_connection_pools(database_url: str) -> AsyncIterator[tuple[psycopg_pool.AsyncConnectionPool, ...]]:
    pools = [
        psycopg_pool.AsyncConnectionPool(
            database_url, min_size=1, max_size=1, max_waiting=1, kwargs={"autocommit": a}, open=False, name=f"p{a}"
        )
        for a in (False, True)
    ]
    for pool in pools:
        await pool.open(wait=True)
    yield tuple(pools)
    for pool in pools:
        await pool.close()


async def test_a_busy_pool_answers_resource_exhausted_before_the_deadline(one_connection_pools) -> None:
    write_pool, read_pool = one_connection_pools
    db = Database(write_pool, read_pool, connect_timeout_s=5.0)
    async with read_pool.connection():  # every read connection is now busy
        token = context.deadline.set(time.monotonic() + 0.5)
        try:
            started = time.perf_counter()
            with pytest.raises(ResourceExhausted) as refused:
                async with db.read({}):
                    pass
            elapsed = time.perf_counter() - started
        finally:
            context.deadline.reset(token)
    assert elapsed < 0.5, f"answered after {elapsed:.2f}s, past the caller's 0.5 s deadline"
    assert refused.value.retry_after_s is not None
    assert "busy" in refused.value.message
    async with db.read({}) as conn:  # and the pool serves again once a connection is free
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
