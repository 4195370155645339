"""Jobs themselves: creating, reading and listing them (as their tenant), closing an upload,
cancelling, and recording that an ended job was tidied."""

from __future__ import annotations

import uuid
from datetime import datetime

from psycopg.rows import dict_row

from meshsearch_api.auth import principal
from meshsearch_api.ingest.domain import Job, JobState, Priority
from meshsearch_api.ingest.store.base import JOB_COLUMNS, StoreBase, complete_if_drained, job_from_row
from meshsearch_common.errors import FailedPrecondition, ResourceExhausted


class JobRecords(StoreBase):
    async def create_job(
        self,
        collection: str,
        priority: Priority,
        collection_create_time: datetime | None = None,
        max_running: int = 0,
    ) -> Job:
        """A new running job of the current tenant; RESOURCE_EXHAUSTED when the tenant already
        runs `max_running` jobs (0: no limit). A per-tenant advisory lock makes the count exact
        across api replicas."""
        tenant = principal.tenant()
        async with self._transaction() as conn:
            if max_running:
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 28))", (f"jobs:{tenant}",))
                counted = await conn.execute(
                    "SELECT count(*) FROM meshsearch_ingest_jobs WHERE tenant = %s AND state = 'running'", (tenant,)
                )
                running = (await counted.fetchone() or (0,))[0]
                if running >= max_running:
                    raise ResourceExhausted(
                        f"this tenant already runs {running} ingest jobs, its limit; wait for one to end "
                        "(WatchJob) or cancel one",
                        30.0,
                        reason="TOO_MANY_JOBS",
                        quota_subject=f"tenant:{tenant}:running_jobs",
                    )
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                f"INSERT INTO meshsearch_ingest_jobs (id, collection, priority, collection_create_time, tenant) "
                f"VALUES (%s, %s, %s, %s, %s) RETURNING {JOB_COLUMNS}",
                (uuid.uuid4().hex, collection, int(priority), collection_create_time, tenant),
            )
            row = await cursor.fetchone()
            assert row is not None
            return job_from_row(row)

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
                f"SELECT {JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE {' AND '.join(conditions)} "
                "ORDER BY create_time DESC, id DESC LIMIT %s",
                (*params, limit + 1),
            )
            rows = await cursor.fetchall()
        jobs = [job_from_row(row) for row in rows[:limit]]
        more = len(rows) > limit
        return jobs, (jobs[-1].create_time, jobs[-1].id) if more else None

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
                await complete_if_drained(conn, job_id)
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
                f"SELECT {JOB_COLUMNS} FROM meshsearch_ingest_jobs WHERE tidy_time IS NULL AND state <> 'running' "
                "AND finish_time < clock_timestamp() - make_interval(secs => %s) ORDER BY finish_time LIMIT %s",
                (ended_s, limit),
            )
            return [job_from_row(row) for row in await cursor.fetchall()]
