"""Ingest: the api's side of bulk ingestion. It stages uploads and queues their batches, and
it answers questions about jobs. Workers do the embedding (see `processing`)."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import AsyncIterator

import procrastinate

from meshsearch_api.auth import principal
from meshsearch_api.auth.quotas import TenantQuotas
from meshsearch_api.chunking import resolve
from meshsearch_api.documents import document_problem
from meshsearch_api.domain import Document
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.ingest import metrics, queue
from meshsearch_api.ingest.domain import DeadLetter, Job, JobState, Priority, Progress
from meshsearch_api.ingest.estimates import EstimateTally
from meshsearch_api.ingest.store import JobStore
from meshsearch_api.ingest.tidy import tidy_ended_job
from meshsearch_api.search_client import SearchClient
from meshsearch_common import pages
from meshsearch_common.errors import FailedPrecondition, InvalidArgument
from meshsearch_common.identifiers import check_job_id, check_text, parse_sequence

log = logging.getLogger(__name__)

POLL_S = 0.5  # how often WatchJob looks at the job
REPORT_EVERY_S = 2.0  # a report at least this often while the job runs
RATE_WINDOW_S = 30.0


class Ingest:
    def __init__(
        self,
        store: JobStore,
        app: procrastinate.App,
        search: SearchClient,
        embedder: EmbedderClient,
        max_documents_per_message: int,
        max_text_bytes: int,
        quotas: TenantQuotas,
        window: int = 4,
    ) -> None:
        self._store = store
        self._quotas = quotas
        self._app = app
        self._search = search
        self._embedder = embedder
        self._max_documents = max_documents_per_message
        self._max_text_bytes = max_text_bytes
        self._window = window  # a tenant's batches queued or running at once (store.turns)

    async def start(self, collection: str, priority: Priority) -> Job:
        if not collection:
            raise InvalidArgument("start.collection is required", field="start.collection")
        self._quotas.check_priority(priority is Priority.INTERACTIVE)
        # NOT_FOUND now, not in every batch later; its creation time tells it from a namesake.
        info = await self._search.get_collection(collection)
        job = await self._store.create_job(collection, priority, info.create_time, self._quotas.max_running_jobs())
        log.info("ingest job created", extra={"job": job.id, "collection": collection})
        return job

    async def resume(self, job_id: str) -> Job:
        """The job whose upload continues; an ended job's upload cannot (unless it was complete)."""
        job = await self._store.get_job(check_job_id(job_id, "resume_job_id"))
        if job.ended and not job.upload_complete:
            raise FailedPrecondition(
                f"job '{job_id}' is {job.state.value}; its upload cannot continue: start a new job",
                field="resume_job_id",
                reason="JOB_ENDED",
            )
        return job

    async def upload(self, job_id: str, first_sequence: int, documents: list[Document]) -> int:
        """Stage documents durably; return the acknowledged count (all sequence numbers below it)."""
        if not documents:
            raise InvalidArgument("batch.documents must not be empty", field="batch.documents")
        if len(documents) > self._max_documents:
            raise InvalidArgument(
                f"{len(documents)} documents in one message exceed the limit of {self._max_documents}; "
                "send smaller messages",
                field="batch.documents",
            )

        def problem(document: Document) -> str | None:
            found = document_problem(document, self._max_text_bytes)
            return found.description if found else None

        await self._quotas.charge(len(documents), sum(len(d.text.encode()) for d in documents))
        staged = await self._store.stage(job_id, first_sequence, documents, problem)
        metrics.UPLOADED.inc(max(0, staged.acknowledged - first_sequence))
        if staged.batch_ids:
            await queue.top_up_quietly(self._app, self._store, principal.tenant(), self._window)
        return staged.acknowledged

    async def complete(self, job_id: str, total: int) -> Job:
        job = await self._store.complete_upload(job_id, total)
        if job.state is JobState.COMPLETED:  # every batch was stored before the upload's end arrived
            await tidy_ended_job(self._store, self._search, job)
        return job

    async def get(self, job_id: str) -> Job:
        return await self._store.get_job(check_job_id(job_id))

    async def list_jobs(self, collection: str, page_size: int, page_token: str) -> tuple[list[Job], str]:
        size = pages.checked_size(page_size)
        after = pages.decode_position(page_token, "page_token", check_job_id) if page_token else None
        jobs, last = await self._store.list_jobs(check_text(collection, "collection"), size, after)
        return jobs, pages.encode_position(*last) if last else ""

    async def cancel(self, job_id: str) -> Job:
        """Stop the job; its staged copies go (no batch of a cancelled job is claimed again), and an
        index it deferred is built now."""
        job = await self._store.cancel(check_job_id(job_id))
        await tidy_ended_job(self._store, self._search, job)
        await queue.top_up_quietly(self._app, self._store, job.tenant, self._window)  # its window is free
        return job

    async def dead_letters(self, job_id: str, page_size: int, page_token: str) -> tuple[list[DeadLetter], str]:
        size = pages.checked_size(page_size)
        after = -1
        if page_token:
            after = parse_sequence(pages.decode(page_token, "page_token"), "page_token")
        letters, last = await self._store.dead_letters(check_job_id(job_id), size, after)
        return letters, pages.encode(str(last)) if last is not None else ""

    async def redrive(self, job_id: str) -> tuple[int, Job]:
        count = await self._store.redrive(check_job_id(job_id))
        await queue.top_up_quietly(self._app, self._store, principal.tenant(), self._window)
        return count, await self._store.get_job(job_id)

    async def watch(self, job_id: str) -> AsyncIterator[Progress]:
        """Reports until the job ends: on every change of state, and every REPORT_EVERY_S."""
        job = await self.get(job_id)
        samples: collections.deque[tuple[float, int]] = collections.deque()
        last_report = -math.inf
        last_state = None
        while True:
            now = time.monotonic()
            processed = job.done + job.failed
            samples.append((now, processed))
            while len(samples) > 2 and samples[0][0] < now - RATE_WINDOW_S:
                samples.popleft()
            if job.state != last_state or now - last_report >= REPORT_EVERY_S or job.ended:
                span = samples[-1][0] - samples[0][0]
                rate = (samples[-1][1] - samples[0][1]) / span if span >= 1.0 else 0.0
                remaining = job.received - processed
                eta = remaining / rate if job.upload_complete and rate > 0 else (0.0 if job.ended else None)
                yield Progress(job, rate, eta)
                last_report, last_state = now, job.state
            if job.ended:
                return
            await asyncio.sleep(POLL_S)
            job = await self._store.get_job(job_id)

    async def estimator(self, collection: str) -> EstimateTally:
        """An empty tally of what uploading documents to `collection` would cost."""
        if not collection:
            raise InvalidArgument("collection is required", field="collection")
        info = await self._search.get_collection(collection)
        chunking = resolve(info.chunking, await self._embedder.window_tokens())
        return EstimateTally(chunking, self._embedder, self._max_text_bytes)
