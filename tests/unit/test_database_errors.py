"""How database failures reach callers: each as a status a caller can act on, never INTERNAL."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors

from meshsearch_common.database import DISK_FULL_RETRY_S, DatabaseRole, database_errors
from meshsearch_common.errors import ResourceExhausted, Unavailable

ROLE = DatabaseRole("the test database", "TEST_DATABASE_UNAVAILABLE", "MESHSEARCH_TEST_POOL_SIZE")
NO_POOL: Any = None  # these failures never consult the pool


def test_a_full_disk_is_resource_exhausted_with_a_long_retry_delay() -> None:
    with pytest.raises(ResourceExhausted) as raised, database_errors(NO_POOL, ROLE):
        raise pg_errors.DiskFull("could not extend file: No space left on device")
    assert "out of disk space" in str(raised.value) and "nothing was written" in str(raised.value)
    assert raised.value.retry_after_s == DISK_FULL_RETRY_S


def test_a_read_only_standby_is_unavailable_not_internal() -> None:
    with pytest.raises(Unavailable) as raised, database_errors(NO_POOL, ROLE):
        raise pg_errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
    assert "read-only" in str(raised.value)
    assert raised.value.reason == ROLE.reason


class _CountingPool:
    """Stands in for a pool: counts the checks of its idle connections."""

    name = "counting"

    def __init__(self) -> None:
        self.checks = 0

    async def check(self) -> None:
        self.checks += 1


@pytest.mark.parametrize(
    ("failure", "checked"),
    [
        (psycopg.OperationalError("server closed the connection unexpectedly"), 1),  # lost: no SQLSTATE
        (pg_errors.AdminShutdown("terminating connection due to administrator command"), 1),
        (pg_errors.SqlclientUnableToEstablishSqlconnection('could not connect to server "shard_1"'), 0),
    ],
)
async def test_a_lost_connection_has_the_pool_check_the_others(failure: Exception, checked: int) -> None:
    """A restarted PostgreSQL broke every pooled connection: one failure has the pool test them
    all at once, instead of each failing a call of its own. An error the server reported (here a
    foreign server it could not reach) leaves the pool alone."""
    pool: Any = _CountingPool()
    with pytest.raises(Unavailable), database_errors(pool, ROLE):
        raise failure
    await asyncio.sleep(0)  # the check runs in the background
    await asyncio.sleep(0)
    assert pool.checks == checked


@pytest.mark.parametrize(
    ("failure", "said"),
    [
        (
            psycopg.OperationalError('connection to server at "10.1.2.3", port 5433 failed: Connection refused'),
            "the connection failed or was lost",
        ),
        (pg_errors.AdminShutdown("terminating connection due to administrator command"), "restarting"),
    ],
)
async def test_an_unreachable_database_is_named_without_the_drivers_words(failure: Exception, said: str) -> None:
    """Every caller reads a status message, so it says what is down and why in general terms;
    the driver's text, with the server's address, stays on __cause__ for the log."""
    pool: Any = _CountingPool()
    with pytest.raises(Unavailable) as raised, database_errors(pool, ROLE):
        raise failure
    assert said in raised.value.message and "retry" in raised.value.message
    assert "10.1.2.3" not in raised.value.message and "5433" not in raised.value.message
    assert raised.value.__cause__ is failure
