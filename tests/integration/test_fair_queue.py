"""Tenants take turns in the ingest queue (store.turns, queue.top_up), on the real jobs
database and procrastinate's real queue: a tenant with a thousand batches to run has only its
window of them queued, so another tenant's batch is queued within the first window's worth, and
the big tenant's next batches are queued only as earlier ones end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import procrastinate
import pytest
from psycopg_pool import AsyncConnectionPool

from meshsearch_api.auth import principal
from meshsearch_api.domain import Document
from meshsearch_api.ingest import queue
from meshsearch_api.ingest.domain import Priority
from meshsearch_api.ingest.store import JobStore

WINDOW = 3


@pytest.fixture
async def app(database_url: str, pool: AsyncConnectionPool) -> AsyncIterator[procrastinate.App]:
    """A queue nobody works: the test reads its order instead of running it."""
    opened = queue.create_app(database_url, pool_size=2)
    await opened.open_async()
    yield opened
    await opened.close_async()


async def staged(store: JobStore, tenant: str, batches: int, priority: Priority = Priority.BULK) -> str:
    with principal.acting_as(tenant):
        job = await store.create_job(f"fair_{tenant}", priority)
        documents = [Document(f"d{i}", f"text {i}") for i in range(batches)]
        await store.stage(job.id, 0, documents, lambda document: None)
        await store.complete_upload(job.id, batches)
    return job.id


async def queued_order(pool: AsyncConnectionPool, tenants: list[str]) -> list[str]:
    """The tenants of the waiting tasks, in the order workers will take them."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            """
            SELECT j.tenant FROM procrastinate_jobs t
            JOIN meshsearch_ingest_batch_tasks q ON q.task_id = t.id
            JOIN meshsearch_ingest_batches b ON b.id = q.batch_id
            JOIN meshsearch_ingest_jobs j ON j.id = b.job_id
            WHERE t.status = 'todo' AND j.tenant = ANY(%s)
            ORDER BY t.priority DESC, t.id
            """,
            (tenants,),
        )
        return [row[0] for row in await cursor.fetchall()]


async def end_one_batch(pool: AsyncConnectionPool, tenant: str) -> None:
    """What a worker does when it stores a batch: the batch is done, its task succeeded."""
    async with pool.connection() as conn:
        await conn.execute(
            """
            WITH ended AS (
                UPDATE meshsearch_ingest_batches SET state = 'done' WHERE id = (
                    SELECT b.id FROM meshsearch_ingest_batches b
                    JOIN meshsearch_ingest_jobs j ON j.id = b.job_id AND j.tenant = %s
                    JOIN meshsearch_ingest_batch_tasks q ON q.batch_id = b.id
                    WHERE b.state = 'pending' ORDER BY b.id LIMIT 1)
                RETURNING id)
            UPDATE procrastinate_jobs SET status = 'succeeded'
            WHERE id = (SELECT task_id FROM meshsearch_ingest_batch_tasks WHERE batch_id = (SELECT id FROM ended))
            """,
            (tenant,),
        )


async def test_a_small_tenants_batch_is_queued_within_the_big_tenants_window(
    pool: AsyncConnectionPool, app: procrastinate.App
) -> None:
    store = JobStore(pool, batch_documents=1)
    big, small = f"big{uuid.uuid4().hex[:8]}", f"small{uuid.uuid4().hex[:8]}"
    await staged(store, big, 200)
    assert await queue.top_up(app, store, big, WINDOW) == WINDOW
    assert await queue.top_up(app, store, big, WINDOW) == 0, "a full window queues nothing more"
    assert await store.batches_in_flight(big) == WINDOW

    await staged(store, small, 1)
    assert await queue.top_up(app, store, small, WINDOW) == 1
    order = await queued_order(pool, [big, small])
    assert order == [big] * WINDOW + [small], order  # not behind 200 batches

    await end_one_batch(pool, big)
    assert await store.batches_in_flight(big) == WINDOW - 1
    assert await queue.top_up(app, store, big, WINDOW) == 1, "an ended batch opens one place"
    order = await queued_order(pool, [big, small])
    assert order.index(small) == WINDOW - 1 and len(order) == WINDOW + 1, order


async def test_the_reconciler_gives_a_turn_nobody_gave(pool: AsyncConnectionPool, app: procrastinate.App) -> None:
    """A process that staged batches and died before queueing them leaves them waiting: the
    reconciler's sweep finds the tenant and queues its window."""
    store = JobStore(pool, batch_documents=1)
    tenant = f"orphan{uuid.uuid4().hex[:8]}"
    await staged(store, tenant, 10)
    assert tenant in await store.tenants_waiting(10_000)
    reconcile = queue.Reconciler(app, store, None, 3600, 3600, 3600, queue.Retention(3600, 3600, 3600), window=WINDOW)  # type: ignore[arg-type]
    await reconcile()
    assert await store.batches_in_flight(tenant) == WINDOW
