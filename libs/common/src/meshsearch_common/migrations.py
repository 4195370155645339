"""Versioned schema migrations on PostgreSQL, applied once under an advisory lock.

Every process that owns tables (the search service; the api and its workers for ingest jobs)
calls `apply` at start. Replicas that start together take turns on the transaction-scoped
advisory lock, and each applies only the versions missing from its version table, all in one
transaction. Migrations are append-only: never edit a released one, add the next version.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # psycopg is a dependency of the services that own tables, not of this library
    import psycopg

log = logging.getLogger(__name__)

# SQL text, or a function of the connection for what SQL alone cannot say.
Migration = str | Callable[[Any], Awaitable[None]]
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


async def apply(
    conn: psycopg.AsyncConnection, lock_key: int, version_table: str, migrations: Sequence[tuple[int, Migration]]
) -> int:
    """Bring the schema to the newest version; return the version in force."""
    if not _IDENTIFIER.match(version_table):
        raise ValueError(f"not a plain table name: {version_table!r}")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {version_table} "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {version_table}")  # noqa: S608
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, migration in migrations:
            if version > current:
                log.info("applying schema migration", extra={"table": version_table, "version": version})
                if isinstance(migration, str):
                    await conn.execute(migration)
                else:
                    await migration(conn)
                await conn.execute(f"INSERT INTO {version_table} (version) VALUES (%s)", (version,))  # noqa: S608
                current = version
    return current
