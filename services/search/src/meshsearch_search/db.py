"""Database access shared by the stores: pooled transactions bounded by the caller's deadline,
an optional read-replica pool for queries, and translation of driver failures into domain errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from meshsearch_common import context
from meshsearch_common.errors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)

# Never let a statement outlive the caller; leave a little time to send the answer.
_DEADLINE_MARGIN_S = 0.05


class Database:
    """The write pool (primary) and, when configured, a read pool (a replica) for queries."""

    def __init__(
        self,
        write_pool: psycopg_pool.AsyncConnectionPool,
        read_pool: psycopg_pool.AsyncConnectionPool | None = None,
        max_statement_s: float = 60.0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.write_pool = write_pool
        self.read_pool = read_pool or write_pool
        self.max_statement_s = max_statement_s
        # How long to wait for a connection: short, so an outage answers UNAVAILABLE promptly.
        self.connect_timeout_s = connect_timeout_s

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        *,
        read_only: bool = False,
        settings: Mapping[str, str] | None = None,
        max_statement_s: float | None = None,
    ) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection in a transaction; `settings` are applied with SET LOCAL
        semantics in the same round trip as the statement timeout, which follows the deadline.

        A lost server, a refused connection or an exhausted pool becomes UNAVAILABLE (the pool
        reconnects by itself once PostgreSQL is back); a statement stopped by the timeout
        becomes DEADLINE_EXCEEDED.
        """
        remaining = context.remaining_seconds()
        if remaining is not None and remaining <= _DEADLINE_MARGIN_S:
            raise DeadlineExceeded("the deadline passed before the database could be queried")
        cap = max_statement_s or self.max_statement_s
        budget = cap if remaining is None else min(cap, remaining - _DEADLINE_MARGIN_S)
        gucs = {"statement_timeout": str(max(1, int(budget * 1000))), **(settings or {})}
        pool = self.read_pool if read_only else self.write_pool
        try:
            wait = self.connect_timeout_s if remaining is None else min(self.connect_timeout_s, remaining)
            async with pool.connection(timeout=wait) as conn:
                async with conn.transaction():
                    await conn.execute(
                        "SELECT " + ", ".join("set_config(%s, %s, true)" for _ in gucs),
                        [item for pair in gucs.items() for item in pair],
                    )
                    yield conn
        except pg_errors.QueryCanceled as exc:
            raise DeadlineExceeded(f"database statement exceeded the call's deadline: {exc}") from None
        except psycopg_pool.PoolTimeout as exc:
            raise Unavailable(f"database is unavailable: no connection within the deadline ({exc})") from None
        except (psycopg.OperationalError, pg_errors.AdminShutdown, pg_errors.CannotConnectNow) as exc:
            log.warning("database unavailable", extra={"error": str(exc)})
            raise Unavailable(f"database is unavailable: {str(exc).strip() or type(exc).__name__}") from None
