"""The ingest worker (`meshsearch serve worker`, `python -m meshsearch_api.ingest.worker`).

A procrastinate worker that runs batches, under the same server bootstrap as the services, so
it has gRPC health (for probes), reflection, metrics and a graceful SIGTERM: tasks in flight get
the shutdown grace to finish, and a task cut short is simply claimable again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Sequence

import grpc
import procrastinate
from psycopg_pool import AsyncConnectionPool

from meshsearch_api import upstreams
from meshsearch_api.auth.key_store import KeyStore
from meshsearch_api.database import open_pool
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.embedding_cache import EmbeddingCache
from meshsearch_api.ingest import queue
from meshsearch_api.ingest.batch_runner import BatchRetryPolicy, BatchRunner
from meshsearch_api.ingest.index_leases import IndexLeases
from meshsearch_api.ingest.store import JobStore
from meshsearch_api.search_client import SearchClient
from meshsearch_api.settings import WorkerSettings
from meshsearch_common import context
from meshsearch_common.client import Upstream
from meshsearch_common.server import run

log = logging.getLogger(__name__)
QUEUE_CONNECTIONS = 3  # procrastinate's own: fetching, listening, heartbeats


class WorkerApp:
    name = "worker"

    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self._pool: AsyncConnectionPool | None = None
        self._queue: procrastinate.App | None = None
        self._upstreams: list[Upstream] = []
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        return []  # health, reflection and metrics only

    async def start(self) -> None:
        settings = self.settings
        # procrastinate logs every task start and end at info; our metrics count them instead.
        logging.getLogger("procrastinate").setLevel(max(logging.WARNING, logging.getLogger().level))
        if not settings.jobs_database_url:
            raise RuntimeError("an ingest worker needs MESHSEARCH_WORKER_JOBS_DATABASE_URL (the jobs database)")
        self._pool = await open_pool(settings.jobs_database_url, settings.concurrency + 2)
        store = JobStore(self._pool, batch_documents=1)  # workers never stage uploads
        keys = KeyStore(self._pool)  # the keys live in the jobs database; only their retention is ours
        embedder, search = upstreams.connect(settings)
        self._upstreams = [embedder, search]
        # No embedding cache: a bulk load's texts are new, and caching them would evict the
        # queries' embeddings that the cache is for.
        search_client = SearchClient(search)
        runner = BatchRunner(
            store,
            EmbedderClient(embedder, lambda namespace: EmbeddingCache(None, namespace, 1)),
            search_client,
            IndexLeases(search_client, settings.index_lease_s, settings.defer_index),
            BatchRetryPolicy(settings.max_attempts, settings.retry_initial_backoff_s, settings.retry_max_backoff_s),
        )

        async def run_batch(batch_id: int) -> None:
            request = context.request_id.set(f"ingest-batch-{batch_id}")
            deadline = context.deadline.set(time.monotonic() + settings.batch_deadline_s)
            try:
                tenant = await runner.run(batch_id)
                if tenant is not None:  # the batch ended: the tenant's next one may be queued
                    await queue.top_up_quietly(app, store, tenant, settings.tenant_batches_in_flight)
            finally:
                context.deadline.reset(deadline)
                context.request_id.reset(request)

        app = queue.create_app(
            settings.jobs_database_url,
            QUEUE_CONNECTIONS,
            run_batch,
            lambda app: queue.Reconciler(
                app,
                store,
                search_client,
                settings.stalled_after_s,
                settings.orphan_after_s,
                settings.abandon_upload_after_s,
                queue.Retention(
                    settings.dead_letter_retention_s, settings.job_retention_s, settings.key_retention_s, keys
                ),
                settings.tenant_batches_in_flight,
            ),
            settings.reconcile_every_s,
        )
        await app.open_async()
        self._queue = app
        self._worker = asyncio.create_task(
            app.run_worker_async(
                queues=[queue.QUEUE],
                name=f"worker-{os.getpid()}",
                concurrency=settings.concurrency,
                install_signal_handlers=False,
                update_heartbeat_interval=settings.heartbeat_s,
                stalled_worker_timeout=settings.stalled_after_s,
                shutdown_graceful_timeout=settings.shutdown_grace_s,
                delete_jobs="successful",
            )
        )
        self._worker.add_done_callback(self._worker_ended)

    def _worker_ended(self, task: asyncio.Task[None]) -> None:
        """The queue's worker loop must run for as long as the process does: when it ends on its
        own (its database went away for good), stop the process so its supervisor restarts it."""
        if self._stopping:
            return
        error = task.exception() if not task.cancelled() else None
        log.error("the queue worker stopped; exiting so that the process is restarted", extra={"error": str(error)})
        os.kill(os.getpid(), signal.SIGTERM)

    async def stop(self) -> None:
        self._stopping = True
        if self._worker is not None:
            self._worker.cancel()  # procrastinate then stops fetching and lets tasks finish
            try:
                await self._worker
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 (stopping anyway)
                log.debug("queue worker stopped", exc_info=True)
        if self._queue is not None:
            await self._queue.close_async()
        for upstream in self._upstreams:
            await upstream.close()
        if self._pool is not None:
            await self._pool.close()


def create_app() -> WorkerApp:
    return WorkerApp(WorkerSettings())


if __name__ == "__main__":
    run(create_app())
