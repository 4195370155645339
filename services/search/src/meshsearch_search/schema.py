"""Versioned schema migrations, applied once under an advisory lock.

Replicas that start together all call `migrate()`; the transaction-scoped advisory lock makes
them take turns, and each applies only the versions missing from `meshsearch_schema`.
Migrations are append-only: never edit a released one, add the next version.
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger(__name__)

# Arbitrary but fixed: identifies meshsearch's migration lock among other advisory locks.
_MIGRATION_LOCK_KEY = 0x6D657368

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE meshsearch_collections (
            id                   bigserial PRIMARY KEY,
            name                 text NOT NULL UNIQUE,
            dimension            integer NOT NULL,
            metric               text NOT NULL,
            storage              text NOT NULL,
            hnsw_m               integer NOT NULL,
            hnsw_ef_construction integer NOT NULL,
            model_id             text NOT NULL DEFAULT '',
            model_revision       text NOT NULL DEFAULT '',
            model_dimension      integer NOT NULL DEFAULT 0,
            model_normalized     boolean NOT NULL DEFAULT false,
            create_time          timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
]


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Bring the schema to the newest version; return the version in force."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS meshsearch_schema "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM meshsearch_schema")
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, sql in MIGRATIONS:
            if version > current:
                log.info("applying schema migration", extra={"version": version})
                await conn.execute(sql)
                await conn.execute("INSERT INTO meshsearch_schema (version) VALUES (%s)", (version,))
                current = version
    return current
