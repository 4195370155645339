"""IndexLeases: a worker's side of deferring the HNSW index of a collection a job loads.

Graph inserts are most of the database's work in a bulk load, and building the graph once at
the end is several times cheaper (see the search service's index_keeper). So before storing a
job's batch, a worker asks the search service to defer the index of the job's collection:
granted while the collection is empty, or already deferred. It renews the lease every third
of its length while the job's batches keep coming, and when the job's last batch is stored it
has the index built (see `tidy`). A worker that dies simply stops renewing: the search service builds the
index when the lease runs out. Workers running the same job renew the same lease.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from meshsearch_api.search_client import SearchClient

_REFUSED = -1.0  # the collection held points when the job began: its index stays
_REMEMBERED_JOBS = 1024


class IndexLeases:
    def __init__(
        self,
        search: SearchClient,
        lease_s: float,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._search = search
        self._clock = clock
        self._lease_s = lease_s
        self._enabled = enabled
        self._renewed: OrderedDict[str, float] = OrderedDict()  # job id -> when its lease was renewed
        self._lock = asyncio.Lock()  # one DeferIndex at a time: concurrent batches of a job ask once

    async def hold(self, job_id: str, collection: str) -> None:
        """Defer the index of `collection` for job `job_id`, or renew the deferral when due."""
        if not self._enabled:
            return
        async with self._lock:
            renewed = self._renewed.get(job_id)
            if renewed == _REFUSED or (renewed is not None and self._clock() - renewed < self._lease_s / 3):
                return
            deferred = await self._search.defer_index(collection, self._lease_s)
            self._renewed[job_id] = self._clock() if deferred else _REFUSED
            self._renewed.move_to_end(job_id)
            while len(self._renewed) > _REMEMBERED_JOBS:
                self._renewed.popitem(last=False)

    def forget(self, job_id: str) -> None:
        """The job has ended (its index is built by `tidy_ended_job`)."""
        self._renewed.pop(job_id, None)
