"""Tenants take turns in the ingest queue, through the served contract with the real worker:
while one tenant's load of hundreds of batches runs, another tenant's one-batch job completes
after about a window of the first tenant's batches, not after all of them (issue 28)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_harness.secured import SecuredApis, bearer, start_secured_apis
from tests import waiting
from tests.e2e.ingest_helpers import sentences

BIG_BATCHES = 300


@pytest.fixture(scope="module")
def roomy(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApis]:
    """An api with auth on whose tenants may load hundreds of documents."""
    quotas = {
        "MESHSEARCH_API_TENANT_MAX_DOCUMENTS": "100000",
        "MESHSEARCH_API_TENANT_MAX_INGEST_BYTES_PER_DAY": str(10**9),
    }
    yield from start_secured_apis(stack, tmp_path_factory.mktemp("fair"), extra_env=quotas, count=1)


def start_job(channel: grpc.Channel, key: str, collection: str, documents: list[pb.Document]) -> str:
    """Upload `documents` one per message (one batch each) and close the upload; the job id."""
    pb_grpc.CollectionServiceStub(channel).CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=collection)), metadata=bearer(key), timeout=30
    )
    requests = [pb.StartIngestRequest(start=pb.IngestOptions(collection=collection))]
    requests += [
        pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=i, documents=[d])) for i, d in enumerate(documents)
    ]
    requests.append(pb.StartIngestRequest(complete=pb.UploadComplete(total_documents=len(documents))))
    answers = list(pb_grpc.IngestServiceStub(channel).StartIngest(iter(requests), metadata=bearer(key), timeout=120))
    return answers[0].job_id


def long_documents(count: int) -> list[pb.Document]:
    """Documents of a dozen sentences each (a model window's worth): batches that take the
    worker a while, so that the load is still running when the small job arrives."""
    parts = sentences(count * 12, salt="big")
    return [
        pb.Document(id=f"big-{i}", text=" ".join(p.text for p in parts[i * 12 : (i + 1) * 12])) for i in range(count)
    ]


def test_a_small_job_is_not_queued_behind_another_tenants_large_load(roomy: SecuredApis) -> None:
    big_key, small_key = roomy.new_key(f"big-{uuid.uuid4().hex[:8]}"), roomy.new_key(f"small-{uuid.uuid4().hex[:8]}")
    with grpc.insecure_channel(roomy.target()) as channel:
        jobs = pb_grpc.IngestServiceStub(channel)

        def job(job_id: str, key: str) -> pb.Job:
            return jobs.GetJob(pb.GetJobRequest(job_id=job_id), metadata=bearer(key), timeout=30).job

        big = start_job(channel, big_key, "load", long_documents(BIG_BATCHES))
        waiting.until_sync(lambda: job(big, big_key).done > 0, timeout_s=60, what="the large load starts")
        big_done_before = job(big, big_key).done
        small = start_job(channel, small_key, "few", sentences(1, salt="small"))
        waiting.until_sync(
            lambda: job(small, small_key).state == pb.JOB_STATE_COMPLETED, timeout_s=120, what="the small job ends"
        )
        big_after = job(big, big_key)
    ran_meanwhile = big_after.done - big_done_before
    left_then = BIG_BATCHES - big_done_before
    # Queued behind the whole load, the small job would end after it. Taking turns, it waits for
    # a window of the load's batches (store.turns, tests/integration/test_fair_queue.py has the
    # exact order); the load's other slots keep running while the small job uploads and runs,
    # and while this test polls, so what ran meanwhile is a few slots' worth, not the load.
    assert big_after.state == pb.JOB_STATE_RUNNING, "the small job waited for the whole load"
    assert ran_meanwhile < left_then / 3, f"{ran_meanwhile} of the load's {left_then} remaining batches ran first"
