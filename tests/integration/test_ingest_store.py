"""The jobs database's own rules, on the real PostgreSQL of the test stack: an upload whose
client went away is ended, but only once nothing it sent is left to process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from meshsearch_api.domain import Document
from meshsearch_api.ingest.database import open_pool
from meshsearch_api.ingest.model import JobState, Priority
from meshsearch_api.ingest.store import JobStore
from meshsearch_common.errors import FailedPrecondition

IDLE_S = 3600


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    opened = await open_pool(database_url, 2)
    yield opened
    await opened.close()


async def backdate(pool: AsyncConnectionPool, job_id: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE meshsearch_ingest_jobs SET update_time = clock_timestamp() - interval '2 hours' WHERE id = %s",
            (job_id,),
        )


def no_problem(document: Document) -> str | None:
    return None


async def test_an_upload_that_stops_is_abandoned_once_what_it_sent_is_processed(pool: AsyncConnectionPool) -> None:
    store = JobStore(pool, batch_documents=2)
    silent = await store.create_job("abandoned_upload_test", Priority.BULK)
    await store.stage(silent.id, 0, [Document(f"d{i}", f"text {i}") for i in range(3)], no_problem)
    active = await store.create_job("abandoned_upload_test", Priority.BULK)
    finished = await store.create_job("abandoned_upload_test", Priority.BULK)
    await store.complete_upload(finished.id, 0)
    for job in (silent, finished):
        await backdate(pool, job.id)

    # Its batches are still pending: a worker may yet store them, so the job stays.
    assert silent.id not in await store.abandon_idle_uploads(IDLE_S, 100)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE meshsearch_ingest_batches SET state = 'done' WHERE job_id = %s AND state = 'pending'", (silent.id,)
        )
    await backdate(pool, silent.id)
    abandoned = await store.abandon_idle_uploads(IDLE_S, 100)

    assert silent.id in abandoned and active.id not in abandoned and finished.id not in abandoned
    ended = await store.get_job(silent.id)
    assert ended.state is JobState.FAILED and ended.finish_time is not None
    assert "upload abandoned" in ended.error and f"{IDLE_S} s" in ended.error, ended.error
    assert (await store.get_job(active.id)).state is JobState.RUNNING
    with pytest.raises(FailedPrecondition, match="failed; start a new job"):
        await store.stage(silent.id, 3, [Document("d3", "text 3")], no_problem)
    assert silent.id not in await store.abandon_idle_uploads(IDLE_S, 100)  # once only
