"""What a PostgreSQL failure means to a caller: the one mapping from driver and pool errors to
domain errors, for every service that keeps its state in PostgreSQL (the search service's
vectors; the api's keys, jobs and quotas).

- a statement stopped by its timeout (the caller's deadline) is DEADLINE_EXCEEDED;
- a pool whose every connection stays busy, or whose waiting line is full, is RESOURCE_EXHAUSTED
  with a short RetryInfo: the database is healthy, just saturated;
- a lost server, a refused connection, or no connection within the wait is UNAVAILABLE: the
  pools reconnect by themselves once PostgreSQL is back.

Only services with a database import this module (it needs psycopg: `meshsearch-common[postgres]`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import TracebackType

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from meshsearch_common.errors import DeadlineExceeded, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

# Retry hint given when every pooled connection is busy: about one statement's time.
POOL_BUSY_RETRY_S = 0.1
DISK_FULL_RETRY_S = 30.0  # freeing disk space takes an operator, not a moment


@dataclass(frozen=True)
class DatabaseRole:
    """How a database's failures are named to callers: `what` in messages ("the jobs
    database"), `reason` in google.rpc.ErrorInfo when it is down, and the setting that sizes its
    pool, named when the pool is the limit."""

    what: str
    reason: str
    pool_size_setting: str


def _unreachable_because(sqlstate: str | None) -> str:
    """Why a database cannot serve, in words for any caller. The driver's own text (host, port,
    the server's message) stays in the service's log and on the error's __cause__: every caller
    may read a status message, and a tenant has no business with the mesh's addresses."""
    if sqlstate is None:
        return "the connection failed or was lost"
    if sqlstate.startswith("57P"):
        return "it is shutting down, restarting or starting up"
    return f"SQLSTATE {sqlstate}"


def pool_saturated(pool: psycopg_pool.AsyncConnectionPool) -> bool:
    """Every connection the pool may hold exists and is checked out: the database is up and busy.
    (While PostgreSQL is down, broken connections are discarded, so the pool is not full.)"""
    stats = pool.get_stats()
    return stats.get("pool_size", 0) >= pool.max_size and stats.get("pool_available", 0) == 0


# Background checks of pools whose connection just failed, one at a time per pool (see `check_soon`).
_CHECKS: dict[int, asyncio.Task[None]] = {}


def check_soon(pool: psycopg_pool.AsyncConnectionPool) -> None:
    """Test the pool's idle connections in the background, replacing the broken ones: a lost
    connection usually means PostgreSQL restarted, which broke every connection the pool holds,
    and each would otherwise fail one more call before the pool noticed it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    running = _CHECKS.get(id(pool))
    if running is not None and not running.done():
        return

    async def check() -> None:
        try:
            await pool.check()
        except Exception as exc:  # the next failing call tries again
            log.warning("pool check failed", extra={"pool": pool.name, "error": str(exc)})
        finally:
            _CHECKS.pop(id(pool), None)

    _CHECKS[id(pool)] = loop.create_task(check())


class database_errors:  # noqa: N801 (used as a context manager, named like one)
    """Within it, the failures of work on `pool` become domain errors. Usable with `with` and
    `async with` alike, so it can stand in one `async with` beside the pool's `connection()`."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool, role: DatabaseRole) -> None:
        self._pool = pool
        self._role = role

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self._translate(exc)  # raises the domain error, or leaves `exc` to propagate

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(kind, exc, tb)

    def _translate(self, exc: BaseException) -> None:
        pool, role = self._pool, self._role
        if isinstance(exc, pg_errors.QueryCanceled):
            raise DeadlineExceeded(f"{role.what}: a statement exceeded the call's deadline: {exc}") from None
        if isinstance(exc, psycopg_pool.TooManyRequests):
            raise ResourceExhausted(
                f"more than {pool.max_waiting} requests are already waiting for a connection to {role.what}; "
                "retry shortly",
                retry_after_s=POOL_BUSY_RETRY_S,
            ) from None
        if isinstance(exc, psycopg_pool.PoolTimeout):
            if pool_saturated(pool):
                raise ResourceExhausted(
                    f"all {pool.max_size} connections to {role.what} stayed busy for as long as the deadline "
                    f"allowed; retry shortly or raise {role.pool_size_setting}",
                    retry_after_s=POOL_BUSY_RETRY_S,
                ) from None
            raise Unavailable(
                f"{role.what} is unavailable: no connection within the deadline; retry shortly", reason=role.reason
            ) from exc
        if isinstance(exc, pg_errors.DiskFull):
            # gRPC's own words for RESOURCE_EXHAUSTED include "the entire file system is out of space".
            log.error("database out of disk space", extra={"database": role.what, "error": str(exc)})
            raise ResourceExhausted(
                f"{role.what} is out of disk space; nothing was written. Retry once an operator has freed space",
                retry_after_s=DISK_FULL_RETRY_S,
            ) from None
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            # Connected to a standby: mid-failover, or a URL without target_session_attrs=read-write.
            log.warning("database is read-only", extra={"database": role.what, "error": str(exc)})
            raise Unavailable(
                f"{role.what} is read-only (a standby) for now; retry shortly", reason=role.reason
            ) from None
        if isinstance(exc, psycopg.OperationalError | pg_errors.AdminShutdown | pg_errors.CannotConnectNow):
            log.warning("database unavailable", extra={"database": role.what, "error": str(exc)})
            state = getattr(exc, "sqlstate", None)
            if state is None or str(state).startswith("57P"):
                check_soon(pool)  # the connection itself was lost (not an error the server reported)
            raise Unavailable(
                f"{role.what} is unavailable ({_unreachable_because(state)}); retry shortly", reason=role.reason
            ) from exc
