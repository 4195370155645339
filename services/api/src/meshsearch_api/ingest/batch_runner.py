"""BatchRunner: what a worker does with one batch. Embed it (as background work, so searches
go first), store it with its receipt, and record the outcome in the job.

A job loading an empty collection defers its HNSW index while it runs (`index_leases`).

Failures are sorted by what they say about the batch:
- RESOURCE_EXHAUSTED: the embedder is full. Wait its RetryInfo delay; this is not a failure
  of the batch and costs no attempt;
- UNAVAILABLE, DEADLINE_EXCEEDED, or anything unexpected: an attempt is spent, and the batch is
  retried with exponential backoff and jitter. After `max_attempts` its documents become dead
  letters, with the last error as the reason;
- NOT_FOUND (the collection was deleted) or FAILED_PRECONDITION (the embedder's model no
  longer matches the collection): the job cannot go on, and it fails with that reason;
- INVALID_ARGUMENT for the whole batch: its documents become dead letters at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from meshsearch_api.auth import principal
from meshsearch_api.chunking import embed_documents, resolve
from meshsearch_api.domain import Document
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.ingest import metrics
from meshsearch_api.ingest.domain import DeadLetter, Job
from meshsearch_api.ingest.index_leases import IndexLeases
from meshsearch_api.ingest.store import Claim, JobStore, batch_receipt
from meshsearch_api.ingest.tidy import tidy_ended_job
from meshsearch_api.search_client import SearchClient
from meshsearch_common.backoff import Backoff
from meshsearch_common.errors import (
    DEFAULT_RETRY_AFTER_S,
    FailedPrecondition,
    InvalidArgument,
    MeshError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger(__name__)


class RetryBatch(Exception):  # noqa: N818 (a signal to the queue, not an error)
    """Run the batch's task again in `delay_s` (the batch is released until then)."""

    def __init__(self, delay_s: float, cause: str) -> None:
        super().__init__(cause)
        self.delay_s = delay_s


@dataclass(frozen=True)
class BatchRetryPolicy:
    """How often a failing batch is tried, and how long it waits between tries: equal jitter,
    so retries of many batches spread out yet none comes back almost at once."""

    max_attempts: int
    initial_backoff_s: float
    max_backoff_s: float

    def backoff_s(self, attempts: int) -> float:
        return Backoff(self.initial_backoff_s, self.max_backoff_s, "equal").delay_s(attempts)


class BatchRunner:
    def __init__(
        self,
        store: JobStore,
        embedder: EmbedderClient,
        search: SearchClient,
        leases: IndexLeases,
        policy: BatchRetryPolicy,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._search = search
        self._leases = leases
        self._policy = policy

    async def run(self, batch_id: int) -> str | None:
        """Process batch `batch_id` if it is claimable; raise RetryBatch to be run again later.
        The tenant whose batch ended (its turn in the queue is free), or None if none did."""
        completed_job: Job | None = None
        with metrics.BATCH_SECONDS.time():
            async with self._store.claim(batch_id) as claim:
                if claim is None:
                    metrics.BATCHES.labels("skipped").inc()
                    return None
                with principal.acting_as(claim.job.tenant):  # the job's collection is its tenant's
                    retry = await self._process(claim)  # the outcome commits with the claim
                if claim.completed_job:
                    completed_job = claim.job
        if completed_job is not None:
            self._leases.forget(completed_job.id)
            await tidy_ended_job(self._store, self._search, completed_job)
        if retry is not None:
            raise retry
        return claim.job.tenant

    async def _process(self, claim: Claim) -> RetryBatch | None:
        """Record the batch's outcome in the claim; a RetryBatch when it must run again."""
        job = claim.job
        receipt = batch_receipt(job.id, claim.batch_id)
        try:
            if await self._search.recorded_receipts(job.collection, [receipt]):
                # Stored by an attempt that died before recording it here: no need to embed again.
                metrics.BATCHES.labels("already_stored").inc()
                await claim.finish(len(claim.documents), [])
                return None
            documents = [Document(d.id, d.text, dict(d.metadata)) for d in claim.documents]
            info = await self._search.get_collection(job.collection)
            if job.collection_create_time and info.create_time and info.create_time != job.collection_create_time:
                raise FailedPrecondition(
                    f"collection '{job.collection}' was deleted and created again after the job started; the job "
                    "does not write into the new collection: start a new job for it",
                    field="collection",
                    reason="COLLECTION_RECREATED",
                )
            await self._leases.hold(job.id, job.collection)
            chunking = resolve(info.chunking, await self._embedder.window_tokens())
            embedded = await embed_documents(self._embedder, documents, chunking, background=True)
            written = await self._search.upsert(job.collection, embedded, receipt)
        except ResourceExhausted as exc:
            delay = exc.retry_after_s or DEFAULT_RETRY_AFTER_S
            metrics.BATCHES.labels("deferred_for_load").inc()
            await claim.retry_later(exc.message, delay, counts=False)
            return RetryBatch(delay, exc.message)
        except (NotFound, FailedPrecondition) as exc:
            metrics.BATCHES.labels("job_failed").inc()
            await claim.fail_job(f"{type(exc).__name__}: {exc.message}")
            return None
        except InvalidArgument as exc:
            metrics.BATCHES.labels("dead").inc()
            await claim.give_up(exc.code.value[0], exc.message)
            return None
        except Exception as exc:  # noqa: BLE001 (transient or unknown: retried, then dead-lettered)
            return await self._failed_attempt(claim, exc)
        rejected = [
            DeadLetter(claim.documents[i].sequence, claim.documents[i].id, InvalidArgument.code.value[0], message)
            for i, message in written.rejected
        ]
        stored = len(claim.documents) - len(rejected)
        metrics.BATCHES.labels("stored").inc()
        metrics.DOCUMENTS.labels("stored").inc(stored)
        metrics.DOCUMENTS.labels("dead").inc(len(rejected))
        await claim.finish(stored, rejected)
        return None

    async def _failed_attempt(self, claim: Claim, exc: Exception) -> RetryBatch | None:
        message = exc.message if isinstance(exc, MeshError) else f"{type(exc).__name__}: {exc}"
        attempts = claim.attempts + 1
        if not isinstance(exc, MeshError):
            log.exception("unexpected failure of an ingest batch", extra={"batch": claim.batch_id})
        if attempts >= self._policy.max_attempts:
            code = exc.code.value[0] if isinstance(exc, MeshError) else Unavailable.code.value[0]
            reason = f"gave up after {attempts} attempts; last error: {message}"
            metrics.BATCHES.labels("dead").inc()
            metrics.DOCUMENTS.labels("dead").inc(len(claim.documents))
            await claim.give_up(code, reason)
            return None
        delay = self._policy.backoff_s(attempts)
        metrics.BATCHES.labels("retried").inc()
        await claim.retry_later(message, delay, counts=True)
        return RetryBatch(delay, message)
