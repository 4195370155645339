"""A client that indexes many batches through the public api the way the server asks it to.

Every client the project ships (the demo, the ingest benchmark, the tests' writers) uses it:
- **Retries**: RESOURCE_EXHAUSTED is retried after the server's `google.rpc.RetryInfo` delay,
  stretched by up to half again at random (jitter, so refused writers do not return in step);
  UNAVAILABLE (a service restarting, a breaker open) after an exponential backoff with jitter.
  Both are safe: IndexDocuments upserts by id. Anything else is final.
- **Concurrency** follows what the server reports. Each answer carries the work the embedder
  had already admitted ahead of the call (`LoadReport.embedder_backlog_seconds`). While that is
  a small share of the call's latency, the model may idle between calls, so one more call is
  let in flight; once it is most of the latency, calls only queue, so one fewer. A lone client
  settles near two calls in flight (one computing, one waiting); other clients' work pushes it
  lower. A refusal halves it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_common.backoff import Backoff
from meshsearch_common.errors import retry_after_of

# Share of a call's latency that the embedder's backlog ahead of it makes up, below which one
# more call may help...
GROW_BELOW_QUEUE_SHARE = 0.3
# ...and above which calls mostly wait, so one fewer is as fast.
SHRINK_ABOVE_QUEUE_SHARE = 0.6
RETRY_JITTER = 0.5
UNAVAILABLE_BACKOFF = Backoff(initial_s=0.5, max_s=10.0, jitter="equal")


@dataclass
class ConcurrencyLimit:
    """How many calls to keep in flight, adjusted from each answer (see the module docstring)."""

    limit: int = 2
    minimum: int = 1
    maximum: int = 16

    def on_answer(self, backlog_s: float, latency_s: float) -> None:
        share = backlog_s / latency_s if latency_s > 0 else 0.0
        if share < GROW_BELOW_QUEUE_SHARE:
            self.limit = min(self.maximum, self.limit + 1)
        elif share > SHRINK_ABOVE_QUEUE_SHARE:
            self.limit = max(self.minimum, self.limit - 1)

    def on_refusal(self) -> None:
        self.limit = max(self.minimum, self.limit // 2)


def refusal_delay(error: grpc.aio.AioRpcError) -> float:
    """How long to wait before retrying a RESOURCE_EXHAUSTED: the server's RetryInfo delay (1 s
    when it sent none), stretched by up to RETRY_JITTER at random so refused callers do not
    return in step."""
    return (retry_after_of(error) or 1.0) * (1 + random.uniform(0, RETRY_JITTER))


class IndexingFailed(RuntimeError):
    """A batch failed with a status that retrying does not fix, or ran out of retries."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"IndexDocuments failed with {code.name}: {details}")
        self.code = code
        self.details = details


@dataclass
class RetryStats:
    refused: int = 0  # RESOURCE_EXHAUSTED answers, each retried after its RetryInfo delay
    unavailable: int = 0  # UNAVAILABLE answers, each retried after a backoff


@dataclass
class Indexer:
    """Indexes batches into one collection; `run` returns when every batch is stored."""

    stub: pb_grpc.DocumentServiceStub
    collection: str
    call_timeout_s: float = 120.0
    max_unavailable_retries: int = 8
    max_refusals: int = 200
    concurrency: ConcurrencyLimit = field(default_factory=ConcurrencyLimit)
    stats: RetryStats = field(default_factory=RetryStats)
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def index_batch(self, documents: list[pb.Document]) -> pb.IndexDocumentsResponse:
        """One batch, retried as the module docstring says; raises IndexingFailed."""
        request = pb.IndexDocumentsRequest(collection=self.collection, documents=documents)
        unavailable = refused = 0
        while True:
            started = time.perf_counter()
            try:
                response: pb.IndexDocumentsResponse = await self.stub.IndexDocuments(
                    request, timeout=self.call_timeout_s
                )
            except grpc.aio.AioRpcError as error:
                code = error.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and refused < self.max_refusals:
                    refused += 1
                    self.stats.refused += 1
                    self.concurrency.on_refusal()
                    await self.sleep(refusal_delay(error))
                    continue
                if code == grpc.StatusCode.UNAVAILABLE and unavailable < self.max_unavailable_retries:
                    unavailable += 1
                    self.stats.unavailable += 1
                    await self.sleep(UNAVAILABLE_BACKOFF.delay_s(unavailable))
                    continue
                raise IndexingFailed(code, error.details() or "") from None
            self.concurrency.on_answer(response.load.embedder_backlog_seconds, time.perf_counter() - started)
            return response

    async def run(
        self,
        batches: Iterable[list[pb.Document]],
        on_done: Callable[[list[pb.Document], pb.IndexDocumentsResponse], None] = lambda batch, response: None,
    ) -> None:
        """Index every batch, keeping `concurrency.limit` calls in flight; `on_done` is called
        as each batch is stored. The first final failure cancels the rest and is raised."""
        pending = iter(batches)
        in_flight: dict[asyncio.Task[pb.IndexDocumentsResponse], list[pb.Document]] = {}
        exhausted = False
        try:
            while True:
                while not exhausted and len(in_flight) < self.concurrency.limit:
                    batch = next(pending, None)
                    if batch is None:
                        exhausted = True
                    else:
                        in_flight[asyncio.create_task(self.index_batch(batch))] = batch
                if not in_flight:
                    return
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    batch = in_flight.pop(task)
                    on_done(batch, task.result())
        finally:
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
