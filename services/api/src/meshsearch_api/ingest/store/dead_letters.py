"""Dead letters: the documents a job could not store, with why; paging through them, and
redriving those whose failure was not their own."""

from __future__ import annotations

from psycopg.rows import dict_row

from meshsearch_api.ingest.domain import DeadLetter, JobState
from meshsearch_api.ingest.store.base import DOCUMENT_FAULTS, StoreBase, new_batch
from meshsearch_common.errors import FailedPrecondition


class DeadLetters(StoreBase):
    async def dead_letters(self, job_id: str, limit: int, after: int) -> tuple[list[DeadLetter], int | None]:
        async with self._connection() as conn:
            await self._read_job(conn, job_id)  # NOT_FOUND for an unknown job, and another tenant's
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "SELECT seq, doc_id, code, reason, attempts, create_time, text_bytes "
                "FROM meshsearch_ingest_dead_letters "
                "WHERE job_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (job_id, after, limit + 1),
            )
            rows = await cursor.fetchall()
        letters = [
            DeadLetter(r["seq"], r["doc_id"], r["code"], r["reason"], r["attempts"], r["create_time"], r["text_bytes"])
            for r in rows[:limit]
        ]
        return letters, letters[-1].sequence if len(rows) > limit else None

    async def redrive(self, job_id: str) -> int:
        """Queue the job's dead letters again as new batches, and run the job again; but not
        the documents at fault themselves (invalid, repeated ids), which would fail the same way."""
        async with self._transaction() as conn:
            job = await self._read_job(conn, job_id, lock=True)
            if job.state is JobState.CANCELLED:
                raise FailedPrecondition(
                    f"job '{job_id}' was cancelled; start a new job", field="job_id", reason="JOB_CANCELLED"
                )
            cursor = await conn.execute(
                "DELETE FROM meshsearch_ingest_dead_letters l WHERE job_id = %s AND code <> ALL(%s) AND EXISTS "
                "(SELECT 1 FROM meshsearch_ingest_documents d WHERE d.job_id = l.job_id AND d.seq = l.seq) "
                "RETURNING seq",
                (job_id, list(DOCUMENT_FAULTS)),
            )
            sequences = sorted(row[0] for row in await cursor.fetchall())
            if not sequences:
                cursor = await conn.execute(
                    "SELECT count(*) FROM meshsearch_ingest_dead_letters WHERE job_id = %s AND code <> ALL(%s)",
                    (job_id, list(DOCUMENT_FAULTS)),
                )
                purged = (await cursor.fetchone() or (0,))[0]
                if purged:
                    raise FailedPrecondition(
                        f"the texts of this job's {purged} dead letters were removed after the dead-letter "
                        "retention; upload those documents again in a new job",
                        field="job_id",
                        reason="DEAD_LETTER_TEXTS_REMOVED",
                    )
            for start in range(0, len(sequences), self._batch_documents):
                group = sequences[start : start + self._batch_documents]
                batch_id = await new_batch(conn, job_id, len(group))
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
            return len(sequences)  # its new batches are queued in the tenant's turn (store.turns)
