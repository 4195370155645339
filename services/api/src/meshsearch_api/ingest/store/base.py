"""What every part of the job store shares: the pool, connections and transactions (with the
database's failures named for callers), reading a job row as its tenant, and the row writes
that several parts make (a new batch, progress counts, completion, dead letters)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from meshsearch_api.auth import principal
from meshsearch_api.database import JOBS
from meshsearch_api.ingest.domain import DeadLetter, Job, JobState, Priority
from meshsearch_common.database import database_errors
from meshsearch_common.errors import AlreadyExists, InvalidArgument, NotFound

# Dead letters whose failure was the document's own: redriving them cannot help.
DOCUMENT_FAULTS = tuple(error.code.value[0] for error in (InvalidArgument, AlreadyExists))

JOB_COLUMNS = (
    "id, collection, state, priority, upload_complete, received, done, failed, "
    "create_time, update_time, finish_time, error, collection_create_time, tenant"
)
RECEIPT_PREFIX = "ingest:"


def job_receipt_prefix(job_id: str) -> str:
    return f"{RECEIPT_PREFIX}{job_id}:"


def batch_receipt(job_id: str, batch_id: int) -> str:
    """The search service's receipt for one batch: present exactly when its points are stored."""
    return f"{job_receipt_prefix(job_id)}{batch_id}"


def job_from_row(row: dict[str, Any]) -> Job:
    return Job(
        id=row["id"],
        collection=row["collection"],
        state=JobState(row["state"]),
        priority=Priority(row["priority"]),
        upload_complete=row["upload_complete"],
        received=row["received"],
        done=row["done"],
        failed=row["failed"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        finish_time=row["finish_time"],
        error=row["error"],
        collection_create_time=row["collection_create_time"],
        tenant=row["tenant"],
    )


async def add_dead_letters(
    conn: psycopg.AsyncConnection, job_id: str, rejected: Sequence[DeadLetter], attempts: int
) -> None:
    if not rejected:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO meshsearch_ingest_dead_letters (job_id, seq, doc_id, code, reason, attempts, text_bytes) "
            "VALUES (%s, %s, %s, %s, %s, %s, coalesce((SELECT octet_length(text) FROM meshsearch_ingest_documents "
            "WHERE job_id = %s AND seq = %s), %s)) ON CONFLICT (job_id, seq) DO UPDATE SET code = EXCLUDED.code, "
            "reason = EXCLUDED.reason, attempts = EXCLUDED.attempts, create_time = clock_timestamp()",
            [
                (job_id, r.sequence, r.document_id, r.code, r.reason[:2000], attempts, job_id, r.sequence, r.text_bytes)
                for r in rejected
            ],
        )


async def new_batch(conn: psycopg.AsyncConnection, job_id: str, documents: int) -> int:
    cursor = await conn.execute(
        "INSERT INTO meshsearch_ingest_batches (job_id, documents) VALUES (%s, %s) RETURNING id", (job_id, documents)
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def count_progress(conn: psycopg.AsyncConnection, job_id: str, done: int, failed: int) -> None:
    await conn.execute(
        "UPDATE meshsearch_ingest_jobs SET done = done + %s, failed = failed + %s, update_time = clock_timestamp() "
        "WHERE id = %s",
        (done, failed, job_id),
    )


async def complete_if_drained(conn: psycopg.AsyncConnection, job_id: str) -> bool:
    """Complete the job when its upload is closed and no batch is pending. The caller holds the
    job row's lock (it updated the row in this transaction), which serializes this check."""
    cursor = await conn.execute(
        "UPDATE meshsearch_ingest_jobs j SET state = 'completed', finish_time = clock_timestamp(), "
        "update_time = clock_timestamp() WHERE j.id = %s AND j.state = 'running' AND j.upload_complete "
        "AND NOT EXISTS (SELECT 1 FROM meshsearch_ingest_batches b WHERE b.job_id = j.id AND b.state = 'pending') "
        "RETURNING j.id",
        (job_id,),
    )
    return await cursor.fetchone() is not None


class StoreBase:
    def __init__(self, pool: AsyncConnectionPool, batch_documents: int, batch_bytes: int = 1 << 62) -> None:
        self._pool = pool
        self._batch_documents = batch_documents
        self._batch_bytes = batch_bytes

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with database_errors(self._pool, JOBS), self._pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[psycopg.AsyncConnection]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    @staticmethod
    async def _read_job(conn: psycopg.AsyncConnection, job_id: str, *, lock: bool = False) -> Job:
        """The current tenant's job (locked against concurrent writers until the transaction
        ends if `lock`), or NOT_FOUND: another tenant's job is absent, by the same query."""
        cursor = conn.cursor(row_factory=dict_row)
        query = f"SELECT {JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE id = %s AND tenant = %s" + (
            " FOR UPDATE" if lock else ""
        )
        await cursor.execute(query, (job_id, principal.tenant()))
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"job '{job_id}' does not exist", field="job_id")
        return job_from_row(row)

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")
