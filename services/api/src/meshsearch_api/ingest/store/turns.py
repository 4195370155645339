"""Tenants take turns in the queue: each has at most a window of batches queued or running at a
time, and its next batches are queued only as earlier ones end.

Why: the queue serves tasks in order within a priority, so queueing a million-document job's
batches all at once would put every other tenant's work behind them. With a window per tenant,
another tenant's first batch waits behind at most a window of each busy tenant's batches, and
the workers take it within about a batch's time, while a tenant alone still keeps a window's
worth of workers busy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from meshsearch_api.ingest.domain import Priority
from meshsearch_api.ingest.store.base import StoreBase

# A batch is in flight while it is pending and its recorded task is waiting or running. Read
# from the queue's side: the queue holds only live tasks (finished ones are deleted), so this
# costs the tenant's window, not its backlog.
_IN_FLIGHT = """
    SELECT count(*) FROM procrastinate_jobs t
    JOIN meshsearch_ingest_batch_tasks q ON q.task_id = t.id
    JOIN meshsearch_ingest_batches b ON b.id = q.batch_id AND b.state = 'pending'
    JOIN meshsearch_ingest_jobs j ON j.id = b.job_id AND j.state = 'running' AND j.tenant = %(tenant)s
    WHERE t.status IN ('todo', 'doing')
"""


class Turns(StoreBase):
    @asynccontextmanager
    async def tenant_turn(self, tenant: str) -> AsyncIterator[psycopg.AsyncConnection]:
        """A transaction holding the tenant's queueing lock, so that two processes topping up one
        tenant at once cannot both fill its window."""
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 28))", (f"queue:{tenant}",))
            yield conn

    @staticmethod
    async def next_batches(conn: psycopg.AsyncConnection, tenant: str, window: int) -> list[tuple[int, Priority]]:
        """The tenant's batches to queue now: never-queued pending batches of its running jobs,
        higher priorities and older batches first, as many as its window has room for (with the
        window full, LIMIT 0 reads none of the backlog)."""
        cursor = await conn.execute(
            f"""
            SELECT b.id, j.priority FROM meshsearch_ingest_batches b
            JOIN meshsearch_ingest_jobs j ON j.id = b.job_id AND j.state = 'running' AND j.tenant = %(tenant)s
            WHERE b.state = 'pending'
              AND NOT EXISTS (SELECT 1 FROM meshsearch_ingest_batch_tasks q WHERE q.batch_id = b.id)
            ORDER BY j.priority DESC, b.id
            LIMIT greatest(0, %(window)s - ({_IN_FLIGHT}))
            """,
            {"tenant": tenant, "window": window},
        )
        return [(int(row[0]), Priority(row[1])) for row in await cursor.fetchall()]

    @staticmethod
    async def record_tasks_in(conn: psycopg.AsyncConnection, batch_ids: list[int], task_ids: list[int]) -> None:
        """Remember which queued task runs each batch, in the caller's transaction."""
        await conn.execute(
            "INSERT INTO meshsearch_ingest_batch_tasks (batch_id, task_id) "
            "SELECT * FROM unnest(%s::bigint[], %s::bigint[]) "
            "ON CONFLICT (batch_id) DO UPDATE SET task_id = EXCLUDED.task_id, queued_at = clock_timestamp()",
            (batch_ids, task_ids),
        )

    async def record_tasks(self, batch_ids: list[int], task_ids: list[int]) -> None:
        """`record_tasks_in` a transaction of its own (a batch queued again by the reconciler)."""
        async with self._transaction() as conn:
            await self.record_tasks_in(conn, batch_ids, task_ids)

    async def tenants_waiting(self, limit: int) -> list[str]:
        """Tenants with never-queued pending batches (for the reconciler: a process that staged
        them may have died before queueing, or a window opened that nobody topped up)."""
        async with self._connection() as conn:
            cursor = await conn.execute(
                """
                SELECT DISTINCT j.tenant FROM meshsearch_ingest_batches b
                JOIN meshsearch_ingest_jobs j ON j.id = b.job_id AND j.state = 'running'
                WHERE b.state = 'pending'
                  AND NOT EXISTS (SELECT 1 FROM meshsearch_ingest_batch_tasks q WHERE q.batch_id = b.id)
                LIMIT %s
                """,
                (limit,),
            )
            return [str(row[0]) for row in await cursor.fetchall()]

    async def batches_in_flight(self, tenant: str) -> int:
        """How many of the tenant's batches are queued or running (for tests and metrics)."""
        async with self._connection() as conn:
            cursor = await conn.execute(_IN_FLIGHT, {"tenant": tenant})
            row = await cursor.fetchone()
            return int(row[0]) if row else 0
