"""Database access shared by the stores.

Writes run in pooled transactions whose settings are transaction-local. Reads (queries, gets,
scrolls) run on a separate pool of autocommit connections (a read replica when configured)
whose session settings are tracked per connection and sent only when they change, so a
steady-state query costs one round trip: measured here, BEGIN + set_config + COMMIT around
every query added about 0.5 ms, as much as the query itself on a small collection.

Every statement is bounded by the caller's deadline (statement_timeout), and so is the wait for
a connection, which ends early enough to answer before the deadline. Driver failures become
domain errors: a pool whose every connection stays busy past that wait is RESOURCE_EXHAUSTED
(the database is healthy, just saturated: retry shortly); a lost server or a refused
connection is UNAVAILABLE (the pools reconnect by themselves once PostgreSQL is back); a
statement stopped by its timeout is DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from meshsearch_common import context
from meshsearch_common.errors import DeadlineExceeded, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

# Never let a statement outlive the caller; leave a little time to send the answer.
_DEADLINE_MARGIN_S = 0.05
# Session statement timeouts are rounded down to one of these (ms), so that callers with
# similar deadlines do not force a settings round trip on every query.
_TIMEOUT_STEPS_MS = (50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000, 60_000, 300_000, 3_600_000)


def _statement_timeout_ms(budget_s: float, exact: bool) -> int:
    budget_ms = max(1, int(budget_s * 1000))
    if exact:
        return budget_ms
    fitting = [step for step in _TIMEOUT_STEPS_MS if step <= budget_ms]
    return fitting[-1] if fitting else budget_ms


# Retry hint given when every pooled connection is busy: about one statement's time.
_POOL_BUSY_RETRY_S = 0.1


def _pool_saturated(pool: psycopg_pool.AsyncConnectionPool) -> bool:
    """Every connection the pool may hold exists and is checked out: the database is up and busy.
    (While PostgreSQL is down, broken connections are discarded, so the pool is not full.)"""
    stats = pool.get_stats()
    return stats.get("pool_size", 0) >= pool.max_size and stats.get("pool_available", 0) == 0


@contextlib.contextmanager
def _database_errors(pool: psycopg_pool.AsyncConnectionPool) -> Iterator[None]:
    try:
        yield
    except pg_errors.QueryCanceled as exc:
        raise DeadlineExceeded(f"database statement exceeded the call's deadline: {exc}") from None
    except psycopg_pool.TooManyRequests:
        raise ResourceExhausted(
            f"more than {pool.max_waiting} requests are already waiting for a connection of the {pool.name} "
            "pool; retry shortly",
            retry_after_s=_POOL_BUSY_RETRY_S,
        ) from None
    except psycopg_pool.PoolTimeout as exc:
        if _pool_saturated(pool):
            raise ResourceExhausted(
                f"all {pool.max_size} database connections of the {pool.name} pool stayed busy for as long as "
                "the deadline allowed; retry shortly or raise MESHSEARCH_SEARCH_POOL_MAX_SIZE",
                retry_after_s=_POOL_BUSY_RETRY_S,
            ) from None
        raise Unavailable(f"database is unavailable: no connection within the deadline ({exc})") from None
    except (psycopg.OperationalError, pg_errors.AdminShutdown, pg_errors.CannotConnectNow) as exc:
        log.warning("database unavailable", extra={"error": str(exc)})
        raise Unavailable(f"database is unavailable: {str(exc).strip() or type(exc).__name__}") from None


class Database:
    """The write pool (primary, transactions) and the read pool (autocommit; a replica if set)."""

    def __init__(
        self,
        write_pool: psycopg_pool.AsyncConnectionPool,
        read_pool: psycopg_pool.AsyncConnectionPool,
        max_statement_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.write_pool = write_pool
        self.read_pool = read_pool
        self.max_statement_s = max_statement_s
        # How long to wait for a connection: short, so an outage answers UNAVAILABLE promptly.
        self.connect_timeout_s = connect_timeout_s
        self._session_settings: weakref.WeakKeyDictionary[psycopg.AsyncConnection, dict[str, str]] = (
            weakref.WeakKeyDictionary()
        )

    def _budget(self, max_statement_s: float | None) -> tuple[float, float]:
        """(statement budget, connection wait) in seconds, from the deadline and the caps."""
        remaining = context.remaining_seconds()
        if remaining is not None and remaining <= _DEADLINE_MARGIN_S:
            raise DeadlineExceeded("the deadline passed before the database could be queried")
        cap = max_statement_s or self.max_statement_s
        budget = cap if remaining is None else min(cap, remaining - _DEADLINE_MARGIN_S)
        wait = min(self.connect_timeout_s, budget)
        return budget, wait

    @contextlib.asynccontextmanager
    async def transaction(
        self, *, settings: Mapping[str, str] | None = None, max_statement_s: float | None = None
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """A write-pool connection in a transaction; `settings` are transaction-local."""
        budget, wait = self._budget(max_statement_s)
        gucs = {"statement_timeout": str(_statement_timeout_ms(budget, exact=True)), **(settings or {})}
        with _database_errors(self.write_pool):
            async with self.write_pool.connection(timeout=wait) as conn:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in gucs),
                        [item for pair in gucs.items() for item in pair],
                    )
                    yield conn

    @contextlib.asynccontextmanager
    async def read(self, settings: Mapping[str, str]) -> AsyncIterator[psycopg.AsyncConnection]:
        """A read-pool connection (autocommit) whose session has exactly `settings` (plus the
        deadline's statement_timeout). Callers must name every setting any read may change,
        so that nothing one query set leaks into the next."""
        budget, wait = self._budget(None)
        desired = {"statement_timeout": str(_statement_timeout_ms(budget, exact=False)), **settings}
        with _database_errors(self.read_pool):
            async with self.read_pool.connection(timeout=wait) as conn:
                applied = self._session_settings.setdefault(conn, {})
                changes = {name: value for name, value in desired.items() if applied.get(name) != value}
                if changes:
                    applied.clear()  # if setting fails midway, the state is unknown: resend all next time
                    await conn.execute(
                        "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in changes),
                        [item for pair in changes.items() for item in pair],
                    )
                    applied.update(desired)
                yield conn
