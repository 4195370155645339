"""The client the project ships for indexing: retries by RetryInfo, concurrency by load."""

from __future__ import annotations

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_cli.indexing import ConcurrencyLimit, Indexer, IndexingFailed
from meshsearch_common.errors import STATUS_DETAILS_KEY, ResourceExhausted, status_details


def refusal(retry_after_s: float) -> grpc.aio.AioRpcError:
    details = status_details(ResourceExhausted("embedder: busy", retry_after_s=retry_after_s))
    assert details is not None
    trailers = grpc.aio.Metadata((STATUS_DETAILS_KEY, details.SerializeToString()))
    return grpc.aio.AioRpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), trailers, "embedder: busy")


class ScriptedStub:
    """Answers IndexDocuments from a script of errors, then successes with a queue time."""

    def __init__(self, errors: list[grpc.aio.AioRpcError], queue_s: float = 0.0) -> None:
        self.errors = errors
        self.queue_s = queue_s
        self.calls = 0

    async def IndexDocuments(self, request: pb.IndexDocumentsRequest, timeout: float) -> pb.IndexDocumentsResponse:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return pb.IndexDocumentsResponse(
            indexed_count=len(request.documents), load=pb.LoadReport(embedder_backlog_seconds=self.queue_s)
        )


async def test_refusals_are_retried_after_the_servers_delay_with_jitter() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    stub = ScriptedStub([refusal(0.4), refusal(0.4)])
    indexer = Indexer(stub, "c", sleep=sleep)  # type: ignore[arg-type]
    response = await indexer.index_batch([pb.Document(id="1", text="a")])
    assert response.indexed_count == 1
    assert stub.calls == 3 and indexer.stats.refused == 2
    assert all(0.4 <= delay <= 0.6 for delay in slept)


async def test_a_final_error_is_raised_not_retried() -> None:
    error = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "no such")
    stub = ScriptedStub([error])
    with pytest.raises(IndexingFailed, match="NOT_FOUND"):
        await Indexer(stub, "c").index_batch([pb.Document(id="1", text="a")])  # type: ignore[arg-type]
    assert stub.calls == 1


def test_concurrency_grows_while_calls_rarely_queue_and_shrinks_when_they_mostly_wait() -> None:
    limit = ConcurrencyLimit(limit=2, maximum=4)
    for _ in range(5):
        limit.on_answer(backlog_s=0.1, latency_s=2.0)
    assert limit.limit == 4
    limit.on_answer(backlog_s=1.5, latency_s=2.0)
    assert limit.limit == 3
    limit.on_answer(backlog_s=0.8, latency_s=2.0)  # in between: hold
    assert limit.limit == 3
    limit.on_refusal()
    assert limit.limit == 1


async def test_every_batch_is_indexed_once_at_the_adaptive_concurrency() -> None:
    stub = ScriptedStub([refusal(0.01)])
    indexer = Indexer(stub, "c")  # type: ignore[arg-type]
    batches = [[pb.Document(id=str(i), text="a")] for i in range(20)]
    done: list[str] = []
    await indexer.run(batches, lambda batch, response: done.extend(d.id for d in batch))
    assert sorted(done, key=int) == [str(i) for i in range(20)]
