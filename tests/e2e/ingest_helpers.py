"""Helpers of the ingestion tests: a corpus with known content, and checks that a collection
holds it exactly once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import grpc
from google.protobuf import json_format

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_harness.datasets import sts_pairs


def sentences(count: int, salt: str = "") -> list[pb.Document]:
    """`count` short real texts, each with metadata naming its position: the distinct STS-b
    sentences (10,566), then pairs of them joined, for corpora larger than that."""
    unique = list(dict.fromkeys(s for a, b, _ in sts_pairs("train") for s in (a, b)))
    n = len(unique)
    documents = []
    for i in range(count):
        text = unique[i] if i < n else f"{unique[i % n]} {unique[(i + i // n) % n]}"
        document = pb.Document(id=f"{salt}doc-{i:06d}", text=text)
        document.metadata.update({"position": i, "salt": salt})
        documents.append(document)
    return documents


def content_hash(document: pb.Document) -> str:
    metadata = json_format.MessageToDict(document.metadata)
    return hashlib.sha256(json.dumps([document.id, document.text, metadata], sort_keys=True).encode()).hexdigest()


async def stored_hashes(
    channel: grpc.aio.Channel, collection: str, metadata: tuple[tuple[str, str], ...] = ()
) -> dict[str, str]:
    """id -> content hash of every document in `collection`, read back through ListDocuments;
    a repeated id fails the check."""
    stub = pb_grpc.DocumentServiceStub(channel)
    found: dict[str, str] = {}
    token = ""
    while True:
        page = await stub.ListDocuments(
            pb.ListDocumentsRequest(collection=collection, page_size=1000, page_token=token),
            metadata=metadata,
            timeout=30,
        )
        for document in page.documents:
            assert document.id not in found, f"{document.id} listed twice"
            found[document.id] = content_hash(document)
        token = page.next_page_token
        if not token:
            return found


async def assert_stored_exactly_once(
    channel: grpc.aio.Channel, collection: str, source: list[pb.Document], metadata: tuple[tuple[str, str], ...] = ()
) -> None:
    stored = await stored_hashes(channel, collection, metadata)
    expected = {d.id: content_hash(d) for d in source}
    missing = expected.keys() - stored.keys()
    extra = stored.keys() - expected.keys()
    wrong = [i for i in expected.keys() & stored.keys() if expected[i] != stored[i]]
    assert not missing and not extra and not wrong, (len(missing), len(extra), wrong[:5])
    info = await pb_grpc.CollectionServiceStub(channel).GetCollection(
        pb.GetCollectionRequest(name=collection), metadata=metadata, timeout=10
    )
    assert info.collection.document_count == len(source)


async def wait_job(
    channel: grpc.aio.Channel,
    job_id: str,
    timeout_s: float,
    until_done: int | None = None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> pb.Job:
    """Poll GetJob (riding out restarts) until the job ends, or has `until_done` documents done."""
    stub = pb_grpc.IngestServiceStub(channel)
    deadline = time.monotonic() + timeout_s
    job = None
    while time.monotonic() < deadline:
        try:
            job = (await stub.GetJob(pb.GetJobRequest(job_id=job_id), metadata=metadata, timeout=5)).job
        except grpc.aio.AioRpcError as error:
            assert error.code() in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}, error
        else:
            if job.state != pb.JOB_STATE_RUNNING or (until_done is not None and job.done >= until_done):
                return job
        await asyncio.sleep(0.2)
    raise AssertionError(f"job {job_id} did not get there in {timeout_s}s: {job}")


async def open_upload(ingest: pb_grpc.IngestServiceStub, collection: str) -> tuple[Any, str]:
    """A StartIngest stream into `collection`, its start sent, and the new job's id. The stream
    is typed Any, as the generated stub gives it, so its replies read without EOF checks."""
    call = ingest.StartIngest()
    await call.write(pb.StartIngestRequest(start=pb.IngestOptions(collection=collection)))
    return call, (await call.read()).job_id
