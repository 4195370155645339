"""The job queue: procrastinate on the jobs database.

One task runs one batch. Batches are queued with their job's priority, so workers take those
of interactive jobs before those of bulk loads (procrastinate fetches higher priorities first).
Within a priority tenants take turns: a tenant has at most TENANT_BATCHES_IN_FLIGHT batches
queued or running, and its next ones are queued as those end (`top_up`, store.turns), so one
tenant's million documents queue a window at a time, not ahead of everyone else's.

procrastinate delivers a task at least once, never exactly once, and by itself never re-runs
the task of a SIGKILLed worker. Neither matters for correctness here: a batch is claimed with
a row lock and finished once (see `store`), so a duplicate task finds nothing to do. What does
matter is that every pending batch eventually gets a task, which the reconciler ensures:
a periodic task (without a lock: procrastinate issue #1408) that
- retries the tasks of workers whose heartbeat stopped (`get_stalled_jobs`), and
- queues a task again for batches whose task died (see JobStore.orphaned_batches), and
- tops up the tenants whose batches wait for a turn nobody gave them (a process died between
  staging and queueing, or ended a job without topping up), and
- fails the jobs whose upload stopped without completing (JobStore.abandon_idle_uploads), and
- drops dead letters' texts past their retention (JobStore.purge_dead_letter_texts), and
- tidies the ended jobs that were not tidied (tidy.tidy_leftovers), and
- deletes ended jobs, and revoked or expired API keys, past their retention (`Retention`): the
  jobs database then holds what is live and recent, not every job and key there ever was.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import procrastinate
import psycopg
from procrastinate.jobs import Job as QueuedJob
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.types import JSONValue

from meshsearch_api.ingest import metrics, tidy
from meshsearch_api.ingest.batch_runner import RetryBatch
from meshsearch_api.ingest.domain import Priority
from meshsearch_api.ingest.store import JobStore
from meshsearch_api.search_client import SearchClient
from meshsearch_common.database_pool import ReconnectingPool
from meshsearch_common.errors import Unavailable

if TYPE_CHECKING:
    from meshsearch_api.auth.key_store import KeyStore

log = logging.getLogger(__name__)

QUEUE = "meshsearch-ingest"
BATCH_TASK = "meshsearch.ingest.run_batch"
RECONCILE_TASK = "meshsearch.ingest.reconcile"
RECONCILE_PRIORITY = 100  # ahead of any batch, so a long queue cannot delay the repairs
DATABASE_RETRY_S = 2.0
ORPHANS_PER_ROUND = 1000


class BatchRetry(BaseRetryStrategy):
    """Run a task again when its batch asked to (RetryBatch, with its delay) or the jobs
    database failed under it; anything else is the batch's own business (see processing)."""

    def get_retry_decision(self, *, exception: BaseException, job: QueuedJob) -> RetryDecision | None:
        if isinstance(exception, RetryBatch):
            return RetryDecision(retry_at=_after(exception.delay_s))
        if isinstance(exception, (psycopg.OperationalError, Unavailable)):
            return RetryDecision(retry_at=_after(DATABASE_RETRY_S))
        return None


def _after(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=max(0.0, seconds))


def create_app(
    conninfo: str,
    pool_size: int,
    run_batch: Callable[[int], Awaitable[None]] | None = None,
    reconciler_for: Callable[[procrastinate.App], Callable[[], Awaitable[None]]] | None = None,
    reconcile_every_s: int = 5,
) -> procrastinate.App:
    """The procrastinate app. The api only queues tasks (no callables); a worker passes what
    runs them: a batch runner, and the reconciler (built on the app itself)."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(
            conninfo=conninfo, min_size=1, max_size=pool_size, pool_factory=ReconnectingPool
        )
    )
    reconcile = reconciler_for(app) if reconciler_for is not None else None

    @app.task(name=BATCH_TASK, queue=QUEUE, retry=BatchRetry())
    async def run_batch_task(batch_id: int) -> None:
        if run_batch is None:
            raise RuntimeError("this process only queues ingest tasks")
        await run_batch(batch_id)

    @app.periodic(cron=f"*/{reconcile_every_s} * * * * *", periodic_id="reconcile")
    @app.task(name=RECONCILE_TASK, queue=QUEUE, priority=RECONCILE_PRIORITY)
    async def reconcile_task(timestamp: int) -> None:
        if reconcile is None:
            raise RuntimeError("this process only queues ingest tasks")
        await reconcile()

    return app


async def _defer(app: procrastinate.App, batch_ids: list[int], priority: Priority) -> list[int]:
    """Queue one task per batch; their ids."""
    deferrer = app.configure_task(BATCH_TASK, queue=QUEUE, priority=int(priority), allow_unknown=False)
    arguments: list[dict[str, JSONValue]] = [{"batch_id": batch_id} for batch_id in batch_ids]
    return list(await deferrer.batch_defer_async(*arguments))


async def enqueue(app: procrastinate.App, store: JobStore, batch_ids: list[int], priority: Priority) -> None:
    """Queue a task again for batches that had one (their turn was given already), and
    remember it on the batch."""
    if batch_ids:
        await store.record_tasks(batch_ids, await _defer(app, batch_ids, priority))


async def top_up(app: procrastinate.App, store: JobStore, tenant: str, window: int) -> int:
    """Queue the tenant's next batches, as many as its window has room for; how many. A failure
    here loses nothing: the batches are staged, and the reconciler tops the tenant up later."""
    async with store.tenant_turn(tenant) as conn:
        batches = await store.next_batches(conn, tenant, window)
        by_priority: dict[Priority, list[int]] = {}
        for batch_id, priority in batches:
            by_priority.setdefault(priority, []).append(batch_id)
        for priority, batch_ids in by_priority.items():
            await store.record_tasks_in(conn, batch_ids, await _defer(app, batch_ids, priority))
    return len(batches)


async def top_up_quietly(app: procrastinate.App, store: JobStore, tenant: str, window: int) -> None:
    """`top_up`, logging a failure instead of raising it: the caller's own work is done and
    durable, and the reconciler gives the turn later."""
    try:
        await top_up(app, store, tenant, window)
    except Exception:  # noqa: BLE001 (staged is durable; the reconciler tops up later)
        log.warning("could not queue a tenant's next batches; the reconciler will", exc_info=True)


@dataclass(frozen=True)
class Retention:
    """How long what has ended is kept (WorkerSettings holds and documents each value), and
    where the keys are."""

    dead_letter_texts_s: float
    ended_jobs_s: float
    ended_keys_s: float
    keys: KeyStore | None = None  # None: keys are not this reconciler's to purge


class Reconciler:
    """The periodic repairs (see the module's docstring)."""

    def __init__(
        self,
        app: procrastinate.App,
        store: JobStore,
        search: SearchClient,
        stalled_after_s: float,
        orphan_after_s: float,
        abandon_upload_after_s: float,
        retention: Retention,
        window: int = 4,
    ) -> None:
        self._app = app
        self._store = store
        self._search = search
        self._stalled_after_s = stalled_after_s
        self._orphan_after_s = orphan_after_s
        self._abandon_upload_after_s = abandon_upload_after_s
        self._retention = retention
        self._window = window

    async def __call__(self) -> None:
        manager = self._app.job_manager
        for job in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=self._stalled_after_s):
            log.warning("retrying the task of a stalled worker", extra={"task": job.id})
            metrics.STALLED.inc()
            await manager.retry_job(job)
        orphans = await self._store.orphaned_batches(self._orphan_after_s, ORPHANS_PER_ROUND)
        by_priority: dict[Priority, list[int]] = {}
        for batch_id, priority in orphans:
            by_priority.setdefault(priority, []).append(batch_id)
        for priority, batch_ids in by_priority.items():
            log.warning("queueing orphaned batches again", extra={"batches": len(batch_ids)})
            metrics.RECONCILED.inc(len(batch_ids))
            await enqueue(self._app, self._store, batch_ids, priority)
        for tenant in await self._store.tenants_waiting(ORPHANS_PER_ROUND):
            if await top_up(self._app, self._store, tenant, self._window):
                metrics.TOPPED_UP.inc()
        for job_id in await self._store.abandon_idle_uploads(self._abandon_upload_after_s, ORPHANS_PER_ROUND):
            log.warning("upload abandoned; job failed", extra={"job_id": job_id})
            metrics.ABANDONED.inc()
        retention = self._retention
        purged = await self._store.purge_dead_letter_texts(retention.dead_letter_texts_s, ORPHANS_PER_ROUND)
        if purged:
            log.info("dead letters' texts removed after the retention", extra={"documents": purged})
        purged = await self._store.purge_ended_jobs(retention.ended_jobs_s, ORPHANS_PER_ROUND)
        if purged:
            log.info("ended jobs deleted after the retention", extra={"jobs": purged})
            metrics.PURGED.labels("job").inc(purged)
        if retention.keys is not None:
            purged = await retention.keys.purge_ended(retention.ended_keys_s, ORPHANS_PER_ROUND)
            if purged:
                log.info("revoked or expired API keys deleted after the retention", extra={"keys": purged})
                metrics.PURGED.labels("api_key").inc(purged)
        # An ended job is tidied by whoever notices its end, at once; what is left after the
        # orphan delay was missed (the abandoned jobs above are tidied here too).
        tidied = await tidy.tidy_leftovers(self._store, self._search, self._orphan_after_s, ORPHANS_PER_ROUND)
        if tidied:
            log.warning("tidied ended jobs left untidy", extra={"jobs": tidied})
            metrics.TIDIED_LATE.inc(tidied)
