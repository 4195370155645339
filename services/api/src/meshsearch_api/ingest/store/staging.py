"""Staging an upload: each acknowledged document is committed with the job's `received` count
before the upload acknowledges it, grouped into batches for the workers; and dropping the
staged copies once a job has ended."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from psycopg.types.json import Jsonb

from meshsearch_api.domain import Document
from meshsearch_api.ingest.domain import DeadLetter, JobState, Priority
from meshsearch_api.ingest.store.base import DOCUMENT_FAULTS, StoreBase, add_dead_letters, new_batch
from meshsearch_common.errors import AlreadyExists, FailedPrecondition, InvalidArgument


@dataclass(frozen=True)
class Staged:
    """The outcome of staging one upload message."""

    acknowledged: int  # the job's received count after it
    batch_ids: list[int]  # new batches to run
    priority: Priority


def storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; only rejected documents (kept to report them) have any."""
    return text.replace("\x00", "")


def metadata_json(document: Document) -> Jsonb:
    has_nul = "\\u0000" in json.dumps(document.metadata)
    return Jsonb({} if has_nul else document.metadata)


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


class Staging(StoreBase):
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
            rejected: list[DeadLetter] = []
            valid: list[int] = []
            for offset, document in enumerate(fresh):
                sequence = base + offset
                reason = problem(document)
                code = InvalidArgument.code.value[0]
                if reason is None and document.id in first_seen:
                    reason = (
                        f"id '{document.id}' already appears in this job at sequence {first_seen[document.id]}; "
                        "ids must be unique within a job"
                    )
                    code = AlreadyExists.code.value[0]
                if reason is None:
                    first_seen[document.id] = sequence
                    valid.append(offset)
                else:
                    size = len(document.text.encode("utf-8", "surrogateescape"))
                    rejected.append(DeadLetter(sequence, storable(document.id), code, reason, text_bytes=size))
            batch_of: dict[int, int] = {}
            batch_ids: list[int] = []
            sizes = [len(fresh[offset].text.encode("utf-8")) for offset in valid]
            for positions in batches_of(sizes, self._batch_documents, self._batch_bytes):
                group = [valid[p] for p in positions]
                batch_id = await new_batch(conn, job_id, len(group))
                batch_ids.append(batch_id)
                batch_of.update(dict.fromkeys(group, batch_id))
            async with conn.cursor() as insert:
                await insert.executemany(
                    "INSERT INTO meshsearch_ingest_documents (job_id, seq, doc_id, text, metadata, batch_id) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (
                            job_id,
                            base + offset,
                            storable(d.id),
                            storable(d.text),
                            metadata_json(d),
                            batch_of.get(offset),
                        )
                        for offset, d in enumerate(fresh)
                    ],
                )
            await add_dead_letters(conn, job_id, rejected, 0)
            await conn.execute(
                "UPDATE meshsearch_ingest_jobs SET received = received + %s, failed = failed + %s, "
                "update_time = clock_timestamp() WHERE id = %s",
                (len(fresh), len(rejected), job_id),
            )
            return Staged(base + len(fresh), batch_ids, job.priority)

    async def forget_staged(self, job_id: str) -> None:
        """Drop an ended job's staged documents, but those of its dead letters that a redrive
        could store (kept for the retention; those at fault themselves keep only their size).
        The job row's lock orders this against a redrive, which runs the job again with the
        staged copies of its dead letters: those of a running job are never dropped."""
        async with self._transaction() as conn:
            cursor = await conn.execute("SELECT state FROM meshsearch_ingest_jobs WHERE id = %s FOR SHARE", (job_id,))
            row = await cursor.fetchone()
            if row is None or row[0] == JobState.RUNNING.value:
                return
            await conn.execute(
                "DELETE FROM meshsearch_ingest_documents d WHERE d.job_id = %s AND NOT EXISTS "
                "(SELECT 1 FROM meshsearch_ingest_dead_letters l WHERE l.job_id = d.job_id AND l.seq = d.seq "
                "AND l.code <> ALL(%s))",
                (job_id, list(DOCUMENT_FAULTS)),
            )
