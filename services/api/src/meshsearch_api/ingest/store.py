"""JobStore: the durable state of ingest jobs in PostgreSQL.

What it guarantees, and how:
- an acknowledged document is staged: it is committed before the upload acknowledges it, in
  the transaction that advances the job's `received` count (so a resumed upload continues at
  exactly the first document the server does not hold);
- a batch is processed by one worker at a time: a worker claims it with a row lock
  (FOR UPDATE SKIP LOCKED) held until it records the outcome, and a killed worker's lock dies
  with its connection, so the batch is simply claimable again;
- progress is counted once: a batch moves from pending to done (or dead) only while claimed,
  and the job's counters move in that same transaction;
- a job completes in the transaction that finishes its last batch (or closes its upload):
  both lock the job row first, so two workers finishing together cannot both miss it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from meshsearch_api.auth import principal
from meshsearch_api.database import JOBS
from meshsearch_api.domain import Document
from meshsearch_api.ingest.model import DeadLetter, Job, JobState, Priority, Rejected, StagedDocument
from meshsearch_common.database import database_errors
from meshsearch_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

_JOB_COLUMNS = (
    "id, collection, state, priority, upload_complete, received, done, failed, "
    "create_time, update_time, finish_time, error, collection_create_time, tenant"
)
RECEIPT_PREFIX = "ingest:"
CLAIM_WAIT_MS = 2000
# Dead letters whose failure was the document's own: redriving them cannot help.
DOCUMENT_FAULTS = tuple(error.code.value[0] for error in (InvalidArgument, AlreadyExists))


def job_receipt_prefix(job_id: str) -> str:
    return f"{RECEIPT_PREFIX}{job_id}:"


def batch_receipt(job_id: str, batch_id: int) -> str:
    """The search service's receipt for one batch: present exactly when its points are stored."""
    return f"{job_receipt_prefix(job_id)}{batch_id}"


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; only rejected documents (kept to report them) have any."""
    return text.replace("\x00", "")


def _metadata(document: Document) -> Jsonb:
    has_nul = "\\u0000" in json.dumps(document.metadata)
    return Jsonb({} if has_nul else document.metadata)


def _job(row: dict[str, Any]) -> Job:
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


@dataclass(frozen=True)
class Staged:
    """The outcome of staging one upload message."""

    acknowledged: int  # the job's received count after it
    batch_ids: list[int]  # new batches to run
    priority: Priority


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

    async def finish(self, stored: int, rejected: Sequence[Rejected]) -> None:
        """The batch is stored (but `rejected`, which become dead letters)."""
        await self._conn.execute(
            "UPDATE meshsearch_ingest_batches SET state = 'done', attempts = attempts + 1, "
            "update_time = clock_timestamp() WHERE id = %s",
            (self.batch_id,),
        )
        await _add_dead_letters(self._conn, self.job.id, rejected, self.attempts + 1)
        await _count(self._conn, self.job.id, done=stored, failed=len(rejected))
        self.completed_job = await _complete_if_drained(self._conn, self.job.id)

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
        rejected = [Rejected(d.sequence, d.id, code, reason) for d in self.documents]
        await _add_dead_letters(self._conn, self.job.id, rejected, self.attempts + 1)
        await _count(self._conn, self.job.id, done=0, failed=len(rejected))
        self.completed_job = await _complete_if_drained(self._conn, self.job.id)

    async def fail_job(self, error: str) -> None:
        """The job cannot go on (its collection is gone, its model changed)."""
        await self._conn.execute(
            "UPDATE meshsearch_ingest_jobs SET state = 'failed', error = %s, finish_time = clock_timestamp(), "
            "update_time = clock_timestamp() WHERE id = %s AND state = 'running'",
            (error[:2000], self.job.id),
        )


async def _add_dead_letters(
    conn: psycopg.AsyncConnection, job_id: str, rejected: Sequence[Rejected], attempts: int
) -> None:
    if not rejected:
        return
    async with conn.cursor() as cursor:
        await cursor.executemany(
            "INSERT INTO meshsearch_ingest_dead_letters (job_id, seq, doc_id, code, reason, attempts) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (job_id, seq) DO UPDATE SET code = EXCLUDED.code, "
            "reason = EXCLUDED.reason, attempts = EXCLUDED.attempts, create_time = clock_timestamp()",
            [(job_id, r.sequence, r.document_id, r.code, r.reason[:2000], attempts) for r in rejected],
        )


async def _new_batch(conn: psycopg.AsyncConnection, job_id: str, documents: int) -> int:
    cursor = await conn.execute(
        "INSERT INTO meshsearch_ingest_batches (job_id, documents) VALUES (%s, %s) RETURNING id", (job_id, documents)
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _count(conn: psycopg.AsyncConnection, job_id: str, done: int, failed: int) -> None:
    await conn.execute(
        "UPDATE meshsearch_ingest_jobs SET done = done + %s, failed = failed + %s, update_time = clock_timestamp() "
        "WHERE id = %s",
        (done, failed, job_id),
    )


async def _complete_if_drained(conn: psycopg.AsyncConnection, job_id: str) -> bool:
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


def batches_of(sizes: Sequence[int], max_documents: int, max_bytes: int) -> list[list[int]]:
    """Positions grouped into consecutive batches of at most `max_documents` documents and
    `max_bytes` of text (a single larger document gets a batch of its own): long texts make
    smaller batches, so a batch takes about as long whatever the corpus, and a worker that
    dies loses little work."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for position, text_bytes in enumerate(sizes):
        if current and (len(current) == max_documents or size + text_bytes > max_bytes):
            groups.append(current)
            current, size = [], 0
        current.append(position)
        size += text_bytes
    if current:
        groups.append(current)
    return groups


class JobStore:
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
        query = f"SELECT {_JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE id = %s AND tenant = %s" + (
            " FOR UPDATE" if lock else ""
        )
        await cursor.execute(query, (job_id, principal.tenant()))
        row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"job '{job_id}' does not exist", field="job_id")
        return _job(row)

    async def create_job(
        self, collection: str, priority: Priority, collection_create_time: datetime | None = None
    ) -> Job:
        async with self._transaction() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                f"INSERT INTO meshsearch_ingest_jobs (id, collection, priority, collection_create_time, tenant) "
                f"VALUES (%s, %s, %s, %s, %s) RETURNING {_JOB_COLUMNS}",
                (uuid.uuid4().hex, collection, int(priority), collection_create_time, principal.tenant()),
            )
            row = await cursor.fetchone()
            assert row is not None
            return _job(row)

    async def get_job(self, job_id: str) -> Job:
        async with self._connection() as conn:
            return await self._read_job(conn, job_id)

    async def list_jobs(
        self, collection: str, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[Job], tuple[datetime, str] | None]:
        """The current tenant's jobs, newest first; `after` is the (create_time, id) of the last
        job of the previous page."""
        conditions: list[str] = ["tenant = %s"]
        params: list[object] = [principal.tenant()]
        if collection:
            conditions.append("collection = %s")
            params.append(collection)
        if after is not None:
            conditions.append("(create_time, id) < (%s, %s)")
            params.extend(after)
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                f"SELECT {_JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE {' AND '.join(conditions)} "
                "ORDER BY create_time DESC, id DESC LIMIT %s",
                (*params, limit + 1),
            )
            rows = await cursor.fetchall()
        jobs = [_job(row) for row in rows[:limit]]
        more = len(rows) > limit
        return jobs, (jobs[-1].create_time, jobs[-1].id) if more else None

    async def stage(
        self,
        job_id: str,
        first_sequence: int,
        documents: list[Document],
        problem: Callable[[Document], str | None],
    ) -> Staged:
        """Stage an upload message: skip documents already held, dead-letter invalid ones and
        ids repeated within the job, batch the rest; all in one transaction."""
        async with self._transaction() as conn:
            job = await self._read_job(conn, job_id, lock=True)
            if job.state is not JobState.RUNNING:
                raise FailedPrecondition(
                    f"job '{job_id}' is {job.state.value}; start a new job", field="job_id", reason="JOB_ENDED"
                )
            if job.upload_complete:
                raise FailedPrecondition(
                    f"the upload of job '{job_id}' is already complete", field="job_id", reason="UPLOAD_COMPLETE"
                )
            if first_sequence > job.received:
                raise FailedPrecondition(
                    f"batch.first_sequence {first_sequence} leaves a gap: the server holds documents up to "
                    f"{job.received - 1}; resend from sequence {job.received}",
                    field="batch.first_sequence",
                    reason="UPLOAD_GAP",
                )
            fresh = documents[job.received - first_sequence :]
            if not fresh:
                return Staged(job.received, [], job.priority)
            base = job.received
            ids = [d.id for d in fresh]
            cursor = await conn.execute(
                "SELECT doc_id, min(seq) FROM meshsearch_ingest_documents WHERE job_id = %s AND doc_id = ANY(%s) "
                "GROUP BY doc_id",
                (job_id, ids),
            )
            first_seen: dict[str, int] = {row[0]: row[1] for row in await cursor.fetchall()}
            rejected: list[Rejected] = []
            valid: list[int] = []
            for offset, document in enumerate(fresh):
                sequence = base + offset
                reason = problem(document)
                code = 3  # INVALID_ARGUMENT
                if reason is None and document.id in first_seen:
                    reason = (
                        f"id '{document.id}' already appears in this job at sequence {first_seen[document.id]}; "
                        "ids must be unique within a job"
                    )
                    code = 6  # ALREADY_EXISTS
                if reason is None:
                    first_seen[document.id] = sequence
                    valid.append(offset)
                else:
                    rejected.append(Rejected(sequence, _storable(document.id), code, reason))
            batch_of: dict[int, int] = {}
            batch_ids: list[int] = []
            sizes = [len(fresh[offset].text.encode("utf-8")) for offset in valid]
            for positions in batches_of(sizes, self._batch_documents, self._batch_bytes):
                group = [valid[p] for p in positions]
                batch_id = await _new_batch(conn, job_id, len(group))
                batch_ids.append(batch_id)
                batch_of.update(dict.fromkeys(group, batch_id))
            async with conn.cursor() as insert:
                await insert.executemany(
                    "INSERT INTO meshsearch_ingest_documents (job_id, seq, doc_id, text, metadata, batch_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (job_id, base + offset, _storable(d.id), _storable(d.text), _metadata(d), batch_of.get(offset))
                        for offset, d in enumerate(fresh)
                    ],
                )
            await _add_dead_letters(conn, job_id, rejected, 0)
            await conn.execute(
                "UPDATE meshsearch_ingest_jobs SET received = received + %s, failed = failed + %s, "
                "update_time = clock_timestamp() WHERE id = %s",
                (len(fresh), len(rejected), job_id),
            )
            return Staged(base + len(fresh), batch_ids, job.priority)

    async def record_tasks(self, batch_ids: list[int], task_ids: list[int]) -> None:
        """Remember which queued task runs each batch (the reconciler looks for batches without one)."""
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO meshsearch_ingest_batch_tasks (batch_id, task_id) "
                "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) "
                "ON CONFLICT (batch_id) DO UPDATE SET task_id = EXCLUDED.task_id, queued_at = clock_timestamp()",
                (batch_ids, task_ids),
            )

    async def complete_upload(self, job_id: str, total: int) -> Job:
        async with self._transaction() as conn:
            job = await self._read_job(conn, job_id, lock=True)
            if job.state is JobState.RUNNING and not job.upload_complete:
                if total != job.received:
                    raise FailedPrecondition(
                        f"complete.total_documents is {total} but the server holds {job.received} documents; "
                        f"resend from sequence {job.received}",
                        field="complete.total_documents",
                        reason="UPLOAD_INCOMPLETE",
                    )
                await conn.execute(
                    "UPDATE meshsearch_ingest_jobs SET upload_complete = true, update_time = clock_timestamp() "
                    "WHERE id = %s",
                    (job_id,),
                )
                await _complete_if_drained(conn, job_id)
        return await self.get_job(job_id)

    async def cancel(self, job_id: str) -> Job:
        async with self._transaction() as conn:
            await self._read_job(conn, job_id, lock=True)
            await conn.execute(
                "UPDATE meshsearch_ingest_jobs SET state = 'cancelled', finish_time = clock_timestamp(), "
                "update_time = clock_timestamp() WHERE id = %s AND state = 'running'",
                (job_id,),
            )
        return await self.get_job(job_id)

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
            await cursor.execute(f"SELECT {_JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE id = %s", (row["job_id"],))
            job_row = await cursor.fetchone()
            assert job_row is not None
            await cursor.execute(
                "SELECT seq, doc_id, text, metadata FROM meshsearch_ingest_documents WHERE batch_id = %s ORDER BY seq",
                (batch_id,),
            )
            documents = [
                StagedDocument(r["seq"], r["doc_id"], r["text"], r["metadata"]) for r in await cursor.fetchall()
            ]
            yield Claim(conn, batch_id, _job(job_row), row["attempts"], documents)

    async def forget_staged(self, job_id: str) -> None:
        """Drop an ended job's staged documents, but those of its dead letters (kept for redrive).
        The job row's lock orders this against a redrive, which runs the job again with the
        staged copies of its dead letters: those of a running job are never dropped."""
        async with self._transaction() as conn:
            cursor = await conn.execute("SELECT state FROM meshsearch_ingest_jobs WHERE id = %s FOR SHARE", (job_id,))
            row = await cursor.fetchone()
            if row is None or row[0] == JobState.RUNNING.value:
                return
            await conn.execute(
                "DELETE FROM meshsearch_ingest_documents d WHERE d.job_id = %s AND NOT EXISTS "
                "(SELECT 1 FROM meshsearch_ingest_dead_letters l WHERE l.job_id = d.job_id AND l.seq = d.seq)",
                (job_id,),
            )

    async def mark_tidy(self, job_id: str) -> None:
        """Record that the ended job was tidied (not if a redrive has run it again meanwhile)."""
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE meshsearch_ingest_jobs SET tidy_time = clock_timestamp() WHERE id = %s AND state <> 'running'",
                (job_id,),
            )

    async def untidy_jobs(self, ended_s: float, limit: int) -> list[Job]:
        """Jobs, of every tenant, that ended over `ended_s` ago and were never tidied: the one
        who noticed the end died or met an outage before tidying (see `tidy`)."""
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                f"SELECT {_JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE tidy_time IS NULL AND state <> 'running' "
                "AND finish_time < clock_timestamp() - make_interval(secs => %s) ORDER BY finish_time LIMIT %s",
                (ended_s, limit),
            )
            return [_job(row) for row in await cursor.fetchall()]

    async def dead_letters(self, job_id: str, limit: int, after: int) -> tuple[list[DeadLetter], int | None]:
        await self.get_job(job_id)  # NOT_FOUND for an unknown job
        async with self._connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT seq, doc_id, code, reason, attempts, create_time FROM meshsearch_ingest_dead_letters "
                "WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (job_id, after, limit + 1),
            )
            rows = await cursor.fetchall()
        letters = [
            DeadLetter(r["seq"], r["doc_id"], r["code"], r["reason"], r["attempts"], r["create_time"])
            for r in rows[:limit]
        ]
        return letters, letters[-1].sequence if len(rows) > limit else None

    async def redrive(self, job_id: str) -> tuple[int, list[int], Priority]:
        """Queue the job's dead letters again as new batches, and run the job again; but not
        the documents at fault themselves (invalid, repeated ids), which would fail the same way."""
        async with self._transaction() as conn:
            job = await self._read_job(conn, job_id, lock=True)
            if job.state is JobState.CANCELLED:
                raise FailedPrecondition(
                    f"job '{job_id}' was cancelled; start a new job", field="job_id", reason="JOB_CANCELLED"
                )
            cursor = await conn.execute(
                "DELETE FROM meshsearch_ingest_dead_letters WHERE job_id = %s AND code <> ALL(%s) RETURNING seq",
                (job_id, list(DOCUMENT_FAULTS)),
            )
            sequences = sorted(row[0] for row in await cursor.fetchall())
            batch_ids: list[int] = []
            for start in range(0, len(sequences), self._batch_documents):
                group = sequences[start : start + self._batch_documents]
                batch_id = await _new_batch(conn, job_id, len(group))
                batch_ids.append(batch_id)
                await conn.execute(
                    "UPDATE meshsearch_ingest_documents SET batch_id = %s WHERE job_id = %s AND seq = ANY(%s)",
                    (batch_id, job_id, group),
                )
            if sequences:
                await conn.execute(
                    "UPDATE meshsearch_ingest_jobs SET failed = failed - %s, state = 'running', error = '', "
                    "finish_time = NULL, tidy_time = NULL, update_time = clock_timestamp() WHERE id = %s",
                    (len(sequences), job_id),
                )
            return len(sequences), batch_ids, job.priority

    async def orphaned_batches(self, idle_s: float, limit: int) -> list[tuple[int, Priority]]:
        """Pending, due batches of running jobs that no live task will run: never queued (the
        api died between staging and queueing), their task ended without finishing them (the
        database went away under it), or their task is stuck 'doing' while nobody holds the
        batch (its worker lost the database and forgot it). Locked batches are being run."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """
                SELECT b.id, j.priority FROM meshsearch_ingest_batches b
                JOIN meshsearch_ingest_jobs j ON j.id = b.job_id AND j.state = 'running'
                LEFT JOIN meshsearch_ingest_batch_tasks q ON q.batch_id = b.id
                LEFT JOIN procrastinate_jobs t ON t.id = q.task_id
                WHERE b.state = 'pending' AND b.not_before <= clock_timestamp()
                  AND greatest(b.update_time, q.queued_at) < clock_timestamp() - make_interval(secs => %s)
                  AND t.status IS DISTINCT FROM 'todo'
                ORDER BY b.id LIMIT %s
                FOR UPDATE OF b SKIP LOCKED
                """,
                (idle_s, limit),
            )
            return [(int(row[0]), Priority(row[1])) for row in await cursor.fetchall()]

    async def abandon_idle_uploads(self, idle_s: float, limit: int) -> list[str]:
        """Fail the running jobs whose upload is incomplete, silent for `idle_s`, and whose
        batches are all processed: their client is gone. The job-row lock orders this against a
        late upload message, which then finds the job ended (FAILED_PRECONDITION, JOB_ENDED)."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """
                UPDATE meshsearch_ingest_jobs j SET state = 'failed', finish_time = clock_timestamp(),
                    update_time = clock_timestamp(),
                    error = format('upload abandoned: no upload message for %%s s and every document received '
                                   'is processed; the %%s stored stay; upload the rest in a new job',
                                   %s::bigint, j.done)
                WHERE j.id IN (
                    SELECT id FROM meshsearch_ingest_jobs
                    WHERE state = 'running' AND NOT upload_complete
                      AND update_time < clock_timestamp() - make_interval(secs => %s)
                    ORDER BY update_time LIMIT %s FOR UPDATE SKIP LOCKED)
                  AND NOT EXISTS (
                    SELECT 1 FROM meshsearch_ingest_batches b WHERE b.job_id = j.id AND b.state = 'pending')
                RETURNING j.id
                """,
                (round(idle_s), idle_s, limit),
            )
            return [str(row[0]) for row in await cursor.fetchall()]

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.execute("SELECT 1")
