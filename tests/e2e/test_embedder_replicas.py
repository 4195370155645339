"""Embedder replicas behind one target are used evenly (client-side round_robin)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_cli.stack import EmbeddedStack, Ports
from tests.e2e.clients import ApiClient
from tests.e2e.scrape import embed_calls


@pytest.fixture(params=[("torch", "torch")], ids=["same-backend"])
def two_replicas_and_an_api(
    request: pytest.FixtureRequest, stack: EmbeddedStack, tmp_path: Path
) -> Iterator[tuple[EmbeddedStack, EmbeddedStack]]:
    replicas = [
        EmbeddedStack(
            tmp_path / f"replica{i}",
            Ports.ephemeral(),
            database_url=stack.database_url,
            databases=stack.databases,
            caller_token=stack.caller_token,  # the api below calls the session's search service
            extra_env={"MESHSEARCH_EMBEDDER_BACKEND": backend, "MESHSEARCH_EMBEDDER_ONNX_CACHE_DIR": str(tmp_path)},
        )
        for i, backend in enumerate(request.param, start=1)
    ]
    # One target naming every replica: the static-list equivalent of a DNS name with one
    # A record per replica (a headless Kubernetes Service); the channel balances round_robin.
    target = "ipv4:" + ",".join(f"127.0.0.1:{r.ports.embedder}" for r in replicas)
    front = replicas[0]
    front.extra_env = {**front.extra_env, "MESHSEARCH_API_EMBEDDER_TARGET": target}
    front.ports = replace(front.ports, search=stack.ports.search)
    front.redis_url = ""  # no cache: every text must reach an embedder
    try:
        for replica in replicas:
            replica.start_service("embedder")
        front.start_service("api")
        for replica in replicas:
            replica.wait_service("embedder")
        front.wait_service("api")
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            replica.stop()


async def test_the_api_spreads_embedding_calls_across_both_replicas(two_replicas_and_an_api) -> None:
    first, second = two_replicas_and_an_api
    before = embed_calls(first.ports.embedder_metrics), embed_calls(second.ports.embedder_metrics)
    name = f"replicas_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.ports.api}") as channel:
        api = ApiClient(channel)
        await api.create(name)
        for i in range(40):
            await api.query(name, f"question number {i} {uuid.uuid4().hex}")
    after = embed_calls(first.ports.embedder_metrics), embed_calls(second.ports.embedder_metrics)
    served = (after[0] - before[0], after[1] - before[1])
    assert sum(served) >= 40
    assert min(served) >= 15, f"uneven spread across replicas: {served}"


@pytest.mark.parametrize("two_replicas_and_an_api", [("torch", "onnx-int8")], ids=["mixed-backends"], indirect=True)
async def test_replicas_of_different_numerics_never_mix_in_a_collection_unless_it_allows(
    two_replicas_and_an_api,
) -> None:
    """A torch-float32 and an onnx-int8 replica behind one target: a collection keeps the
    numerics it was created with (writes embedded by the other replica are refused with
    FAILED_PRECONDITION / NUMERICS_MISMATCH, nothing is stored from them), while a collection
    created with mixed_numerics takes both; searches are answered either way."""
    first, _ = two_replicas_and_an_api
    strict, mixed = f"strict_{uuid.uuid4().hex[:8]}", f"mixed_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.ports.api}") as channel:
        api = ApiClient(channel)
        created = await api.create(strict)
        assert created.model.numerics in ("torch-float32", "onnx-int8")
        await api.collections.CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=mixed, mixed_numerics=True)), timeout=30
        )
        refused, stored = 0, []
        for i in range(10):
            if i % 2:  # one more embedder call, so strict writes do not always meet the same replica
                await api.query(mixed, f"shift {uuid.uuid4().hex}")
            documents = {f"d{i}": f"document {i} {uuid.uuid4().hex}"}
            await api.index(mixed, documents)  # any numerics goes
            try:
                await api.index(strict, documents)
                stored.append(f"d{i}")
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, error.details()
                assert "mixed_numerics" in (error.details() or "")
                refused += 1
        assert refused and stored, "round robin should have sent writes to both replicas"
        kept = await api.documents.GetDocuments(
            pb.GetDocumentsRequest(collection=strict, ids=[f"d{i}" for i in range(10)]), timeout=10
        )
        assert sorted(d.id for d in kept.documents) == sorted(stored)
        mixed_count = (await api.collections.GetCollection(pb.GetCollectionRequest(name=mixed), timeout=10)).collection
        assert mixed_count.document_count == 10 and mixed_count.mixed_numerics
        for _ in range(4):
            assert await api.query(strict, "document")  # queries of either numerics are answered
