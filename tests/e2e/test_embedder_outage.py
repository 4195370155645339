"""A sick upstream fails fast instead of dragging the mesh down, and recovery is automatic."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.client import error_details
from meshsearch_cli.stack import EmbeddedStack, Ports
from tests import waiting
from tests.e2e.clients import ApiClient
from tests.e2e.scrape import sample

RESET_TIMEOUT_S = 2.0


@pytest.fixture
def isolated_pair(stack: EmbeddedStack, tmp_path) -> Iterator[EmbeddedStack]:
    """An api and an embedder of their own (so the embedder can be stopped), sharing the
    session's PostgreSQL, Redis and search service."""
    pair = EmbeddedStack(
        tmp_path,
        replace(Ports.ephemeral(), search=stack.ports.search),
        caller_token=stack.caller_token,
        extra_env={
            "MESHSEARCH_API_EMBEDDER_POLICY__BREAKER_FAIL_MAX": "3",
            "MESHSEARCH_API_EMBEDDER_POLICY__BREAKER_RESET_TIMEOUT_S": str(RESET_TIMEOUT_S),
            "MESHSEARCH_API_EMBEDDER_POLICY__TIMEOUT_S": "2",
        },
        database_url=stack.database_url,
        databases=stack.databases,
        redis_url=stack.redis_url,
        state_redis_url=stack.state_redis_url,
    )
    with pair.running(services=("embedder", "api")):
        yield pair


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    degraded: bool
    hit_ids: list[str]
    seconds: float
    details: str = ""


async def search(api: ApiClient, collection: str, timeout_s: float = 10) -> Outcome:
    """A vector search with a never-seen query (so the embedding cache cannot answer it) whose
    words also match document "a" by keyword."""
    started = time.perf_counter()
    try:
        response = await api.search.Search(
            pb.SearchRequest(collection=collection, query=f"quick brown fox {uuid.uuid4().hex}"), timeout=timeout_s
        )
    except grpc.aio.AioRpcError as error:
        return Outcome(error.code(), False, [], time.perf_counter() - started, error.details() or "")
    hits = [hit.document.id for hit in response.hits]
    return Outcome(grpc.StatusCode.OK, response.degraded, hits, time.perf_counter() - started, response.degraded_reason)


async def test_searches_degrade_to_keyword_while_the_embedder_is_down_and_recover_after(
    isolated_pair: EmbeddedStack,
) -> None:
    """Under steady search traffic the embedder is killed: every search still answers, from
    keyword search and marked degraded, within its deadline; the breaker opens (writes fail
    fast with RetryInfo); once the embedder is back, searches are by vector again."""
    name = f"outage_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated_pair.ports.api}") as channel:
        api = ApiClient(channel)
        await api.create(name)
        await api.index(name, {"a": "the quick brown fox", "b": "a lazy dog sleeps"})
        first = await search(api, name)
        assert first.code == grpc.StatusCode.OK and not first.degraded

        outcomes: list[Outcome] = []
        stop = asyncio.Event()

        async def searcher() -> None:
            while not stop.is_set():
                outcomes.append(await search(api, name, timeout_s=2.0))
                await asyncio.sleep(0.02)

        traffic = [asyncio.create_task(searcher()) for _ in range(6)]
        await waiting.until(lambda: len(outcomes) >= 12, what="searches flow before the outage")
        # The stack's controls block: run them off the loop, so the searchers keep their pace.
        await asyncio.to_thread(isolated_pair.stop_service, "embedder")
        metrics = isolated_pair.ports.api_metrics
        await waiting.until(
            lambda: sample(metrics, "meshsearch_upstream_breaker_state", upstream="embedder") == 2,
            what="the api's breaker for the embedder opens",
        )

        # The breaker is open: a write needing embeddings fails at once, saying when to retry.
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.index(name, {"c": f"new text {uuid.uuid4().hex}"})
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit breaker" in (refused.value.details() or "")
        assert time.perf_counter() - started < 0.5
        details = error_details(refused.value)
        assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0 and details["ErrorInfo"].reason

        await asyncio.to_thread(isolated_pair.start_service, "embedder")
        await asyncio.to_thread(isolated_pair.wait_service, "embedder")
        back = len(outcomes)
        recovered_by = time.monotonic() + RESET_TIMEOUT_S + 15
        while time.monotonic() < recovered_by and all(o.degraded for o in outcomes[back:]):
            await asyncio.sleep(0.25)
        stop.set()
        await asyncio.gather(*traffic)
        stored = await api.documents.GetDocuments(pb.GetDocumentsRequest(collection=name, ids=["a", "b"]), timeout=5)
        assert [d.id for d in stored.documents] == ["a", "b"]  # nothing written before was lost

    assert all(o.code == grpc.StatusCode.OK for o in outcomes), [o for o in outcomes if o.code != grpc.StatusCode.OK]
    degraded = [o for o in outcomes if o.degraded]
    assert degraded, "no search ran while the embedder was down"
    assert all(o.hit_ids[:1] == ["a"] and "keyword" in o.details for o in degraded)
    # Back by vector search once the embedder returned (a busy embedder may still shed some).
    assert not all(o.degraded for o in outcomes[back:]), "searches did not go back to vector search"
    assert max(o.seconds for o in outcomes) < 2.0


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
