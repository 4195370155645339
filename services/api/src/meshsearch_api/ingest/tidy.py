"""What follows the end of a job, wherever it is noticed: by the worker that stored its last
batch, by the api when the upload's end arrives after every batch was already stored, or by
the api cancelling it."""

from __future__ import annotations

import logging

from meshsearch_api.ingest.store import JobStore, job_receipt_prefix
from meshsearch_api.search_client import SearchClient

log = logging.getLogger(__name__)


async def tidy_ended_job(store: JobStore, search: SearchClient, job_id: str, collection: str) -> None:
    """Drop the job's staged copies, have the collection's index built (a no-op unless a job
    deferred it), and drop the job's receipts: copies and receipts only served to store each
    document once. The staged copies go first: they are in the jobs database, and a search
    service that is down or a deleted collection must not keep them.

    Best effort: the data is stored either way; a deferred index left behind is built when its
    lease lapses, and leftover receipts only take space. Call it acting as the job's tenant."""
    try:
        await store.forget_staged(job_id)
        await search.build_index(collection)
        await search.delete_receipts(collection, job_receipt_prefix(job_id))
    except Exception:  # noqa: BLE001
        log.warning("could not tidy an ended job", extra={"job": job_id}, exc_info=True)
