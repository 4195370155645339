"""What follows the end of a job, wherever it is noticed: by the worker that stored its last
batch, by the api when the upload's end arrives after every batch was already stored, or by
the api cancelling it. The reconciler tidies the jobs that none of them got to: a worker killed
between storing the last batch and tidying, a database or search outage at that moment."""

from __future__ import annotations

import logging

from meshsearch_api.auth import principal
from meshsearch_api.ingest.domain import Job
from meshsearch_api.ingest.store import JobStore, job_receipt_prefix
from meshsearch_api.search_client import SearchClient
from meshsearch_common.errors import NotFound

log = logging.getLogger(__name__)


async def tidy_ended_job(store: JobStore, search: SearchClient, job: Job) -> None:
    """Drop the job's staged copies, have the collection's index built (a no-op unless a job
    deferred it), and drop the job's receipts: copies and receipts only served to store each
    document once. The staged copies go first: they are in the jobs database, and a search
    service that is down must not keep them. A deleted collection took its index and
    receipts with it.

    Never raises: the data is stored either way, and a job left untidy is found again by
    `tidy_leftovers`. Runs as the job's tenant, whoever calls it."""
    try:
        await store.forget_staged(job.id)
        try:
            with principal.acting_as(job.tenant):
                await search.build_index(job.collection)
                await search.delete_receipts(job.collection, job_receipt_prefix(job.id))
        except NotFound:
            pass
        await store.mark_tidy(job.id)
    except Exception:  # noqa: BLE001
        log.warning("could not tidy an ended job; the reconciler tries again", extra={"job": job.id}, exc_info=True)


async def tidy_leftovers(store: JobStore, search: SearchClient, ended_s: float, limit: int) -> int:
    """Tidy up to `limit` jobs that ended over `ended_s` ago and were never tidied; how many."""
    jobs = await store.untidy_jobs(ended_s, limit)
    for job in jobs:
        await tidy_ended_job(store, search, job)
    return len(jobs)
