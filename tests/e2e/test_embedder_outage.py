"""A sick upstream fails fast instead of dragging the mesh down, and recovery is automatic."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_cli.stack import EmbeddedStack, Ports
from tests.e2e.clients import ApiClient

RESET_TIMEOUT_S = 2.0


@pytest.fixture
def isolated_pair(stack: EmbeddedStack, tmp_path) -> Iterator[EmbeddedStack]:
    """An api and an embedder of their own (so the embedder can be stopped), sharing the
    session's PostgreSQL, Redis and search service."""
    pair = EmbeddedStack(
        tmp_path,
        replace(Ports.ephemeral(), search=stack.ports.search),
        extra_env={
            "MESHSEARCH_API_EMBEDDER_POLICY__BREAKER_FAIL_MAX": "3",
            "MESHSEARCH_API_EMBEDDER_POLICY__BREAKER_RESET_TIMEOUT_S": str(RESET_TIMEOUT_S),
            "MESHSEARCH_API_EMBEDDER_POLICY__TIMEOUT_S": "2",
        },
        database_url=stack.database_url,
        redis_url=stack.redis_url,
    )
    try:
        pair.start(services=("embedder", "api"))
        yield pair
    finally:
        pair.stop()


async def search_status(api: ApiClient, collection: str) -> tuple[grpc.StatusCode, str, float]:
    """Search with a never-seen query (so the embedding cache cannot answer it)."""
    started = time.perf_counter()
    try:
        await api.search.Search(pb.SearchRequest(collection=collection, query=f"query {uuid.uuid4().hex}"), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or "", time.perf_counter() - started
    return grpc.StatusCode.OK, "", time.perf_counter() - started


async def test_embedder_down_opens_the_breaker_fails_fast_then_recovers(isolated_pair: EmbeddedStack) -> None:
    name = f"outage_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated_pair.ports.api}") as channel:
        api = ApiClient(channel)
        await api.create(name)
        await api.index(name, {"a": "the quick brown fox"})
        assert (await search_status(api, name))[0] == grpc.StatusCode.OK

        isolated_pair.stop_service("embedder")
        outcomes = [await search_status(api, name) for _ in range(5)]
        assert all(code == grpc.StatusCode.UNAVAILABLE for code, _, _ in outcomes), outcomes

        # The breaker is open now: answers come at once, name the upstream, never reach it.
        code, details, elapsed = await search_status(api, name)
        assert code == grpc.StatusCode.UNAVAILABLE
        assert "embedder" in details and "circuit breaker" in details
        assert elapsed < 0.1, f"open breaker took {elapsed * 1000:.1f} ms to answer"

        isolated_pair.start_service("embedder")
        isolated_pair.wait_service("embedder")
        deadline = time.monotonic() + RESET_TIMEOUT_S + 15
        while True:
            code, details, _ = await search_status(api, name)
            if code == grpc.StatusCode.OK or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        assert code == grpc.StatusCode.OK, details


async def test_an_embedder_redeployed_with_another_model_cannot_corrupt_a_collection(
    isolated_pair: EmbeddedStack,
) -> None:
    old = f"old_model_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated_pair.ports.api}") as channel:
        api = ApiClient(channel)
        await api.create(old)
        await api.index(old, {"a": "the quick brown fox"})

        # Same weights and dimension, but a different identity: its vectors must not be mixed in.
        isolated_pair.stop_service("embedder")
        isolated_pair.extra_env["MESHSEARCH_EMBEDDER_MODEL_ID"] = "example/another-model"
        isolated_pair.start_service("embedder")
        isolated_pair.wait_service("embedder")

        for call in (
            api.search.Search(pb.SearchRequest(collection=old, query="a fox"), timeout=10),
            api.documents.IndexDocuments(
                pb.IndexDocumentsRequest(collection=old, documents=[pb.Document(id="b", text="a lazy dog")]), timeout=10
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "example/another-model" in (refused.value.details() or "")
        assert (await api.collections.GetCollection(pb.GetCollectionRequest(name=old))).collection.document_count == 1

        fresh = await api.create(f"new_model_{uuid.uuid4().hex[:8]}")
        assert fresh.model.id == "example/another-model"
        await api.index(fresh.name, {"c": "a new beginning"})
        assert (await api.query(fresh.name, "beginning"))[0].document.id == "c"
