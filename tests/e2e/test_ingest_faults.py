"""Exactly once under faults: an ingest job survives kill -9 of the api (mid-upload), the
worker, the embedder, the search service and PostgreSQL, in turn, and stores every document
once with the right content. `make chaos` runs the full form (MESHSEARCH_CHAOS=full): a larger
corpus, production timings, several rounds."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.client.uploads import upload
from meshsearch_cli.stack import EmbeddedStack, Ports
from tests.e2e.chaos import SupervisedStack, ingest_through_faults
from tests.e2e.ingest_helpers import assert_stored_exactly_once, sentences, wait_job

FULL = os.environ.get("MESHSEARCH_CHAOS") == "full"
DOCUMENTS = 12_000 if FULL else 3_000
ROUNDS = 3 if FULL else 1
# The short form shortens the worker's failure detection; the full form keeps the defaults.
FAST_RECOVERY = {
    "MESHSEARCH_WORKER_HEARTBEAT_S": "1",
    "MESHSEARCH_WORKER_STALLED_AFTER_S": "5",
    "MESHSEARCH_WORKER_ORPHAN_AFTER_S": "5",
    "MESHSEARCH_WORKER_RECONCILE_EVERY_S": "1",
    "MESHSEARCH_WORKER_RETRY_MAX_BACKOFF_S": "20",
}


def restart_worker(stack: EmbeddedStack, settings: dict[str, str]) -> None:
    """Run the worker again with `settings` on top of the stack's (none: back to those)."""
    for name in ("MESHSEARCH_WORKER_MAX_ATTEMPTS", "MESHSEARCH_WORKER_RETRY_MAX_BACKOFF_S"):
        stack.extra_env.pop(name, None)
    stack.extra_env.update(settings)
    stack.stop_service("worker")
    stack.start_service("worker")
    stack.wait_service("worker")


@pytest.fixture(scope="module")
def supervised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisedStack]:
    stack = EmbeddedStack(
        Path(tmp_path_factory.mktemp("chaos")), Ports.ephemeral(), extra_env={} if FULL else FAST_RECOVERY
    )
    stack.start()
    try:
        with SupervisedStack(stack) as running:
            yield running
    finally:
        stack.stop()


@pytest.fixture
async def channel(supervised: SupervisedStack) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{supervised.stack.ports.api}") as opened:
        yield opened


async def test_a_job_survives_kill_9_of_every_process(supervised: SupervisedStack, channel: grpc.aio.Channel) -> None:
    collections = pb_grpc.CollectionServiceStub(channel)
    for round_ in range(ROUNDS):
        name = f"chaos_{round_}"
        await collections.CreateCollection(pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30)
        documents = sentences(DOCUMENTS, salt=f"r{round_}-")
        killed = await ingest_through_faults(supervised.stack, channel, name, documents, timeout_s=600)
        assert killed == ["api", "worker", "embedder", "search", "postgres"]
    restarts = [event for event in supervised.events if "restart" in event]
    assert restarts, supervised.events


async def test_dead_letters_of_an_outage_are_redriven(supervised: SupervisedStack, channel: grpc.aio.Channel) -> None:
    """With the embedder down for longer than a batch's attempts last, its documents become dead
    letters with the outage as the reason; once it is back, a redrive stores them all."""
    stack = supervised.stack
    await pb_grpc.CollectionServiceStub(channel).CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name="outage")), timeout=30
    )
    restart_worker(stack, {"MESHSEARCH_WORKER_MAX_ATTEMPTS": "2", "MESHSEARCH_WORKER_RETRY_MAX_BACKOFF_S": "1"})
    stack.stop_service("embedder")  # stopped, not killed: the supervisor leaves it down
    try:
        documents = sentences(300, salt="outage-")
        result = await upload(channel, documents, collection="outage")
        job = await wait_job(channel, result.job_id, timeout_s=300)
        assert (job.state, job.done, job.failed) == (pb.JOB_STATE_COMPLETED, 0, 300), job
    finally:
        stack.start_service("embedder")
        stack.wait_service("embedder")
        restart_worker(stack, {})
    ingest = pb_grpc.IngestServiceStub(channel)
    letters = (await ingest.ListDeadLetters(pb.ListDeadLettersRequest(job_id=result.job_id), timeout=10)).dead_letters
    assert len(letters) == 100 and letters[0].code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert "gave up after" in letters[0].reason and "embedder" in letters[0].reason
    redriven = await ingest.RedriveDeadLetters(pb.RedriveDeadLettersRequest(job_id=result.job_id), timeout=10)
    assert redriven.redriven == 300
    job = await wait_job(channel, result.job_id, timeout_s=300)
    assert (job.state, job.done, job.failed) == (pb.JOB_STATE_COMPLETED, 300, 0), job
    await assert_stored_exactly_once(channel, "outage", documents)
