"""Database access shared by the stores.

Writes run in pooled transactions whose settings are transaction-local. Reads (queries, gets,
scrolls) run on a separate pool of autocommit connections (a read replica when configured)
whose session settings are tracked per connection and sent only when they change, so a
steady-state query costs one round trip, not three (BEGIN + set_config + COMMIT around every
query cost as much as the query itself on a small collection).

Every statement is bounded by the caller's deadline (statement_timeout), and so is the wait for
a connection, which ends early enough to answer before the deadline. Driver failures become
domain errors by the mesh's one mapping (`meshsearch_common.database`).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Mapping

import psycopg
import psycopg_pool

from meshsearch_common import context
from meshsearch_common.database import DatabaseRole, database_errors
from meshsearch_common.errors import DeadlineExceeded

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


# How this service names its database's failures (the reason is UNAVAILABLE's own, as it always was).
SEARCH_DATABASE = DatabaseRole("database", "UNAVAILABLE", "MESHSEARCH_SEARCH_POOL_MAX_SIZE")


class Database:
    """The write pool (primary, transactions) and the read pool (autocommit; a replica if set)."""

    def __init__(
        self,
        write_pool: psycopg_pool.AsyncConnectionPool,
        read_pool: psycopg_pool.AsyncConnectionPool,
        max_statement_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        role: DatabaseRole = SEARCH_DATABASE,
    ) -> None:
        self.write_pool = write_pool
        self.role = role  # how its failures are named: this service's database, or one shard
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
        with database_errors(self.write_pool, self.role):
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
        with database_errors(self.read_pool, self.role):
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
