"""The mesh's PostgreSQL pool retries a lost server at a bounded pace and times its attempts."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import psycopg
from psycopg_pool import AsyncConnectionPool

from meshsearch_common.database_pool import CONNECT_TIMEOUT_S, CappedBackoff, ReconnectingPool


class QuickBackoff(CappedBackoff):
    """The same policy on a 50x faster clock, so the test sees many attempts in little time."""

    INITIAL_DELAY = 0.02
    max_delay_s: ClassVar[float] = 0.04


def attempt_times(pool_class: type[AsyncConnectionPool], seconds: float) -> list[float]:
    """When a pool of `pool_class` tried to connect to a server that never answers, over `seconds`."""
    attempts: list[float] = []

    class Recording(pool_class):  # type: ignore[misc, valid-type]
        backoff = QuickBackoff

        async def _connect(self, timeout: float | None = None) -> Any:
            attempts.append(time.monotonic())
            raise psycopg.OperationalError("connection refused (no server in this test)")

    async def run() -> None:
        pool = Recording("postgresql://nobody@127.0.0.1:1/none", min_size=1, open=False, reconnect_timeout=60)
        await pool.open(wait=False)
        await asyncio.sleep(seconds)
        await pool.close(timeout=1)

    asyncio.run(run())
    return attempts


def test_reconnect_delays_double_but_never_past_the_cap() -> None:
    backoff = CappedBackoff(timeout=300)
    delays = []
    for second in range(10):
        backoff.update_delay(float(second))
        delays.append(backoff.delay)
    assert 0.9 <= delays[0] <= 1.1
    assert delays[1] > delays[0]  # still exponential at first
    assert max(delays) == CappedBackoff.max_delay_s  # 1, 2, 2, 2 ... where psycopg_pool goes on to 512


def test_the_pool_keeps_trying_a_lost_server_at_the_capped_pace() -> None:
    """Within 1.5 s, psycopg_pool's own doubling (0.02, 0.04, 0.08 ... s, as QuickBackoff starts)
    would make about 7 attempts; capped at 0.04 s it makes dozens, evenly spaced."""
    attempts = attempt_times(ReconnectingPool, 1.5)
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert len(attempts) >= 15, attempts
    assert max(gaps[5:]) < 0.2, gaps  # scheduler slack only: never the 0.64 s, 1.28 s ... of doubling


def connect_options(pool: ReconnectingPool) -> dict[str, Any]:
    assert isinstance(pool.kwargs, dict)
    return pool.kwargs


def test_a_connection_attempt_is_given_a_time_limit_unless_the_url_sets_one() -> None:
    assert connect_options(ReconnectingPool("postgresql://h/db", open=False))["connect_timeout"] == CONNECT_TIMEOUT_S
    assert "connect_timeout" not in connect_options(ReconnectingPool("postgresql://h/db?connect_timeout=9", open=False))
    assert connect_options(ReconnectingPool("dbname=x", open=False, kwargs={"autocommit": True})) == {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
    }
