"""Claims: a batch is processed by one worker at a time, which holds its row lock until it
records the outcome; a killed worker's lock dies with its connection, so the batch is simply
claimable again. Progress moves only while a batch is claimed, in the claim's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import psycopg
from psycopg.rows import dict_row

from meshsearch_api.ingest.domain import DeadLetter, Job, StagedDocument
from meshsearch_api.ingest.store.base import (
    JOB_COLUMNS,
    StoreBase,
    add_dead_letters,
    complete_if_drained,
    count_progress,
    job_from_row,
)

CLAIM_WAIT_MS = 2000


class Claim:
    """A batch held by one worker until `finish`, `retry_later`, `give_up` or `fail_job`."""

    def __init__(
        self, conn: psycopg.AsyncConnection, batch_id: int, job: Job, attempts: int, documents: list[StagedDocument]
    ) -> None:
        self._conn = conn
        self.batch_id = batch_id
        self.job = job
        self.attempts = attempts  # failed attempts before this one
        self.documents = documents
        self.completed_job = False  # set when finishing this batch completed its job

    async def finish(self, stored: int, rejected: Sequence[DeadLetter]) -> None:
        """The batch is stored (but `rejected`, which become dead letters)."""
        await self._conn.execute(
            "UPDATE meshsearch_ingest_batches SET state = 'done', attempts = attempts + 1, "
            "update_time = clock_timestamp() WHERE id = %s",
            (self.batch_id,),
        )
        await add_dead_letters(self._conn, self.job.id, rejected, self.attempts + 1)
        await count_progress(self._conn, self.job.id, done=stored, failed=len(rejected))
        self.completed_job = await complete_if_drained(self._conn, self.job.id)

    async def retry_later(self, error: str, delay_s: float, counts: bool) -> None:
        """Release the batch for another attempt in `delay_s`; `counts` when the attempt failed
        (a refusal for load is not a failure of the batch)."""
        await self._conn.execute(
            "UPDATE meshsearch_ingest_batches SET attempts = attempts + %s, last_error = %s, "
            "not_before = clock_timestamp() + make_interval(secs => %s), update_time = clock_timestamp() "
            "WHERE id = %s",
            (1 if counts else 0, error[:2000], delay_s, self.batch_id),
        )

    async def give_up(self, code: int, reason: str) -> None:
        """Every document of the batch becomes a dead letter."""
        await self._conn.execute(
            "UPDATE meshsearch_ingest_batches SET state = 'dead', attempts = attempts + 1, last_error = %s, "
            "update_time = clock_timestamp() WHERE id = %s",
            (reason[:2000], self.batch_id),
        )
        rejected = [DeadLetter(d.sequence, d.id, code, reason) for d in self.documents]
        await add_dead_letters(self._conn, self.job.id, rejected, self.attempts + 1)
        await count_progress(self._conn, self.job.id, done=0, failed=len(rejected))
        self.completed_job = await complete_if_drained(self._conn, self.job.id)

    async def fail_job(self, error: str) -> None:
        """The job cannot go on (its collection is gone, its model changed)."""
        await self._conn.execute(
            "UPDATE meshsearch_ingest_jobs SET state = 'failed', error = %s, finish_time = clock_timestamp(), "
            "update_time = clock_timestamp() WHERE id = %s AND state = 'running'",
            (error[:2000], self.job.id),
        )


class Claims(StoreBase):
    @asynccontextmanager
    async def claim(self, batch_id: int) -> AsyncIterator[Claim | None]:
        """Hold batch `batch_id` for the duration of the block, or yield None when it is not
        claimable (done, dead, being processed elsewhere, not due yet, or its job ended).

        A lock held briefly (the reconciler looking) is waited for; one held for longer than
        CLAIM_WAIT is a worker processing the batch, and this claim gives way."""
        async with self._transaction() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            try:
                async with conn.transaction():  # a savepoint: a lock timeout ends only it
                    await conn.execute(f"SET LOCAL lock_timeout = '{CLAIM_WAIT_MS}ms'")
                    await cursor.execute(
                        "SELECT b.attempts, j.id AS job_id FROM meshsearch_ingest_batches b "
                        "JOIN meshsearch_ingest_jobs j ON j.id = b.job_id "
                        "WHERE b.id = %s AND b.state = 'pending' AND b.not_before <= clock_timestamp() "
                        "AND j.state = 'running' FOR UPDATE OF b",
                        (batch_id,),
                    )
                    row = await cursor.fetchone()
            except psycopg.errors.LockNotAvailable:
                row = None
            await conn.execute("SET LOCAL lock_timeout = 0")  # the outcome's writes wait as long as needed
            if row is None:
                yield None
                return
            await cursor.execute(f"SELECT {JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE id = %s", (row["job_id"],))
            job_row = await cursor.fetchone()
            assert job_row is not None
            await cursor.execute(
                "SELECT seq, doc_id, text, metadata FROM meshsearch_ingest_documents WHERE batch_id = %s ORDER BY seq",
                (batch_id,),
            )
            documents = [
                StagedDocument(r["seq"], r["doc_id"], r["text"], r["metadata"]) for r in await cursor.fetchall()
            ]
            yield Claim(conn, batch_id, job_from_row(job_row), row["attempts"], documents)
