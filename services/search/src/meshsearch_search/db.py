"""Database access shared by the stores: pooled transactions bounded by the caller's deadline,
and translation of driver failures into domain errors."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors

from meshsearch_common import context
from meshsearch_common.errors import DeadlineExceeded, Unavailable

log = logging.getLogger(__name__)

# Never let a statement outlive the caller; leave a little time to send the answer.
_DEADLINE_MARGIN_S = 0.05
_MAX_STATEMENT_TIMEOUT_MS = 60_000


@contextlib.asynccontextmanager
async def transaction(pool: psycopg_pool.AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection in a transaction whose statement_timeout follows the deadline.

    A lost server, a refused connection or an exhausted pool becomes UNAVAILABLE (the pool
    reconnects by itself once PostgreSQL is back); a statement stopped by the timeout becomes
    DEADLINE_EXCEEDED.
    """
    remaining = context.remaining_seconds()
    if remaining is not None and remaining <= _DEADLINE_MARGIN_S:
        raise DeadlineExceeded("the deadline passed before the database could be queried")
    timeout_ms = _MAX_STATEMENT_TIMEOUT_MS if remaining is None else int((remaining - _DEADLINE_MARGIN_S) * 1000)
    try:
        async with pool.connection(timeout=None if remaining is None else remaining) as conn:
            async with conn.transaction():
                await conn.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    (str(max(1, min(timeout_ms, _MAX_STATEMENT_TIMEOUT_MS))),),
                )
                yield conn
    except pg_errors.QueryCanceled as exc:
        raise DeadlineExceeded(f"database statement exceeded the call's deadline: {exc}") from None
    except psycopg_pool.PoolTimeout as exc:
        raise Unavailable(f"database is unavailable: no connection within the deadline ({exc})") from None
    except (psycopg.OperationalError, pg_errors.AdminShutdown, pg_errors.CannotConnectNow) as exc:
        log.warning("database unavailable", extra={"error": str(exc)})
        raise Unavailable(f"database is unavailable: {str(exc).strip() or type(exc).__name__}") from None
