"""The reconciler's sweeps across every tenant: batches whose task died, uploads whose client
is gone, dead letters' texts past their retention, and ended jobs past theirs."""

from __future__ import annotations

from meshsearch_api.ingest.domain import Priority
from meshsearch_api.ingest.store.base import StoreBase


class Sweeps(StoreBase):
    async def orphaned_batches(self, idle_s: float, limit: int) -> list[tuple[int, Priority]]:
        """Pending, due batches of running jobs, queued once, that no live task will run: their
        task ended without finishing them (the database went away under it), or it is stuck
        'doing' while nobody holds the batch (its worker lost the database and forgot it).
        Locked batches are being run. Batches never queued wait for their tenant's turn
        (`Turns`), not for this."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """
                SELECT b.id, j.priority FROM meshsearch_ingest_batches b
                JOIN meshsearch_ingest_jobs j ON j.id = b.job_id AND j.state = 'running'
                JOIN meshsearch_ingest_batch_tasks q ON q.batch_id = b.id
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

    async def purge_dead_letter_texts(self, retention_s: float, limit: int) -> int:
        """Drop the staged texts of dead letters whose job ended more than `retention_s` ago
        (the letters keep their id, reason and size); return how many. A redrive runs the
        job again first, so the text of a letter being redriven is never dropped."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """
                DELETE FROM meshsearch_ingest_documents d WHERE (d.job_id, d.seq) IN (
                    SELECT d2.job_id, d2.seq FROM meshsearch_ingest_documents d2
                    JOIN meshsearch_ingest_jobs j ON j.id = d2.job_id
                    WHERE j.state <> 'running' AND j.finish_time < clock_timestamp() - make_interval(secs => %s)
                    LIMIT %s
                    FOR SHARE OF j SKIP LOCKED)
                """,
                (retention_s, limit),
            )
            return cursor.rowcount

    async def purge_ended_jobs(self, retention_s: float, limit: int) -> int:
        """Delete jobs that ended (and were tidied) more than `retention_s` ago, with their
        batches, staged copies and dead letters (ON DELETE CASCADE); return how many. Without
        this every job ever run stays a row, and a busy deployment's tables grow for ever."""
        async with self._transaction() as conn:
            cursor = await conn.execute(
                """
                DELETE FROM meshsearch_ingest_jobs WHERE id IN (
                    SELECT id FROM meshsearch_ingest_jobs
                    WHERE state <> 'running' AND tidy_time IS NOT NULL
                      AND finish_time < clock_timestamp() - make_interval(secs => %s)
                    ORDER BY finish_time LIMIT %s
                    FOR UPDATE SKIP LOCKED)
                """,
                (retention_s, limit),
            )
            return cursor.rowcount

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
