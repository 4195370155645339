"""Tables of ingest jobs, and procrastinate's own, created once under an advisory lock.

The api and the workers both call `migrate()` at start; the lock makes them take turns.
Versions are append-only, as in the search service. procrastinate's schema is the one of the
pinned procrastinate release (see docs/ingestion.md before upgrading it).
"""

from __future__ import annotations

import logging

import psycopg
from procrastinate.schema import SchemaManager

log = logging.getLogger(__name__)

_LOCK_KEY = 0x6D736A62  # "msjb": meshsearch jobs

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE meshsearch_ingest_jobs (
            id              text PRIMARY KEY,
            collection      text NOT NULL,
            priority        smallint NOT NULL,
            state           text NOT NULL DEFAULT 'running',
            upload_complete boolean NOT NULL DEFAULT false,
            received        bigint NOT NULL DEFAULT 0,
            done            bigint NOT NULL DEFAULT 0,
            failed          bigint NOT NULL DEFAULT 0,
            error           text NOT NULL DEFAULT '',
            create_time     timestamptz NOT NULL DEFAULT clock_timestamp(),
            update_time     timestamptz NOT NULL DEFAULT clock_timestamp(),
            finish_time     timestamptz
        );
        CREATE INDEX meshsearch_ingest_jobs_newest ON meshsearch_ingest_jobs (create_time DESC, id DESC);
        CREATE TABLE meshsearch_ingest_batches (
            id          bigserial PRIMARY KEY,
            job_id      text NOT NULL REFERENCES meshsearch_ingest_jobs ON DELETE CASCADE,
            state       text NOT NULL DEFAULT 'pending',
            documents   integer NOT NULL,
            attempts    integer NOT NULL DEFAULT 0,
            not_before  timestamptz NOT NULL DEFAULT clock_timestamp(),
            last_error  text NOT NULL DEFAULT '',
            update_time timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX meshsearch_ingest_batches_pending ON meshsearch_ingest_batches (job_id) WHERE state = 'pending';
        -- Which queued task runs a batch. Kept apart from the batch row so that recording it
        -- never holds a lock a worker claiming the batch would meet.
        CREATE TABLE meshsearch_ingest_batch_tasks (
            batch_id  bigint PRIMARY KEY REFERENCES meshsearch_ingest_batches ON DELETE CASCADE,
            task_id   bigint NOT NULL,
            queued_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE TABLE meshsearch_ingest_documents (
            job_id   text NOT NULL REFERENCES meshsearch_ingest_jobs ON DELETE CASCADE,
            seq      bigint NOT NULL,
            doc_id   text NOT NULL,
            text     text NOT NULL,
            metadata jsonb NOT NULL,
            batch_id bigint,
            PRIMARY KEY (job_id, seq)
        );
        CREATE INDEX meshsearch_ingest_documents_by_id ON meshsearch_ingest_documents (job_id, doc_id);
        CREATE INDEX meshsearch_ingest_documents_by_batch ON meshsearch_ingest_documents (batch_id)
            WHERE batch_id IS NOT NULL;
        CREATE TABLE meshsearch_ingest_dead_letters (
            job_id      text NOT NULL REFERENCES meshsearch_ingest_jobs ON DELETE CASCADE,
            seq         bigint NOT NULL,
            doc_id      text NOT NULL,
            code        integer NOT NULL,
            reason      text NOT NULL,
            attempts    integer NOT NULL,
            create_time timestamptz NOT NULL DEFAULT clock_timestamp(),
            PRIMARY KEY (job_id, seq)
        );
        """,
    ),
]


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Create procrastinate's schema when absent, then bring ours to the newest version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        cursor = await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
        row = await cursor.fetchone()
        if not (row and row[0]):
            log.info("creating the job queue's schema (procrastinate)")
            await conn.execute(SchemaManager.get_schema())
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS meshsearch_ingest_schema "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM meshsearch_ingest_schema")
        row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, statements in MIGRATIONS:
            if version > current:
                log.info("applying ingest schema migration", extra={"version": version})
                await conn.execute(statements)
                await conn.execute("INSERT INTO meshsearch_ingest_schema (version) VALUES (%s)", (version,))
                current = version
    return current
