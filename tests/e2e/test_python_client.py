"""The public Python client (meshsearch.client) against the real mesh with auth on: the key
rides on every call, refusals are retried as the server's RetryInfo says, and the sync and
async clients do the main job (create, index, search with a filter, get, ingest a job)."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest
from google.protobuf import struct_pb2

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.client import NO_RETRIES, AsyncClient, Client, Connection, error_details
from meshsearch_harness.secured import SecuredApis


def _tenant() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def test_the_sync_client_does_the_main_job_with_a_key(secured: SecuredApis) -> None:
    key = secured.new_key(_tenant())
    with Client(Connection(secured.target(0), api_key=key)) as api:
        assert api.create_collection("papers").name == "papers"
        documents = [
            pb.Document(id="a", text="Aspirin lowers the risk of a second heart attack."),
            pb.Document(id="b", text="Glaciers retreat as the climate warms."),
            pb.Document(id="c", text="Statins reduce cardiovascular events in older adults."),
        ]
        documents[0].metadata.update({"field": "medicine"})
        documents[2].metadata.update({"field": "medicine"})
        assert not api.index("papers", documents).errors
        medicine = pb.Filter(
            must=[pb.Condition(field=pb.FieldCondition(key="field", eq=struct_pb2.Value(string_value="medicine")))]
        )
        hits = api.query("papers", "medicine that protects the heart", top_k=2, search_filter=medicine).hits
        assert [hit.document.id for hit in hits][0] == "a" and {hit.document.id for hit in hits} <= {"a", "c"}
        assert [d.id for d in api.get("papers", ["b"])] == ["b"]
    with Client(Connection(secured.target(1)), retry=NO_RETRIES) as anonymous, pytest.raises(grpc.RpcError) as raised:
        anonymous.query("papers", "anything")
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_async_client_waits_out_a_rate_limit_instead_of_failing(secured: SecuredApis) -> None:
    key = secured.new_key(_tenant(), pb.ROLE_READ, read_per_s=2)  # a bucket of 4 reads, 2 more per second
    async with AsyncClient(Connection(secured.target(0), api_key=key)) as api:
        started = time.monotonic()
        for _ in range(10):
            await api.collections.ListCollections(pb.ListCollectionsRequest())
        elapsed = time.monotonic() - started
    assert elapsed >= 2.0, elapsed  # six calls beyond the bucket had to wait for refills
    async with AsyncClient(Connection(secured.target(1), api_key=key), retry=NO_RETRIES) as impatient:
        refused = await asyncio.gather(
            *(impatient.collections.ListCollections(pb.ListCollectionsRequest()) for _ in range(6)),
            return_exceptions=True,
        )
    errors = [outcome for outcome in refused if isinstance(outcome, grpc.aio.AioRpcError)]
    assert errors and errors[0].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_details(errors[0])["RetryInfo"].retry_delay.ToMilliseconds() > 0


async def test_the_async_client_uploads_a_durable_job_with_its_key(secured: SecuredApis) -> None:
    key = secured.new_key(_tenant())
    async with AsyncClient(Connection(secured.target(1), api_key=key)) as api:
        await api.create_collection("notes")
        documents = [pb.Document(id=f"n{i}", text=f"note number {i} about rivers and lakes") for i in range(12)]
        result = await api.upload(documents, collection="notes")
        assert result.acknowledged == 12
        async for update in api.ingest.WatchJob(pb.WatchJobRequest(job_id=result.job_id), timeout=120):
            if update.job.state in (pb.JOB_STATE_COMPLETED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED):
                break
        assert update.job.state == pb.JOB_STATE_COMPLETED and update.job.done == 12
        assert len(await api.get("notes", [d.id for d in documents])) == 12
