"""Flow control through the real mesh: many writers never time out, a frozen upstream is cut
off fast and recovers, and every document ends up stored exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_cli.indexing import Indexer
from meshsearch_cli.stack import EmbeddedStack, Ports
from meshsearch_harness.datasets import scifact_abstracts
from tests import waiting
from tests.e2e.clients import ApiClient

WRITERS = 16
# Abstracts per call. Long abstracts are now embedded as several chunks (about 1.5x the tokens
# of the truncated abstracts issue 8 measured with 16 per call); 10 keeps a call's own work,
# and so the margin between the embedder's admission estimate and a loaded 2-core CPU, where
# it was. With 16, about one run in four saw an admitted call overrun its deadline (see the
# closing note of issue 9: the throughput estimate lags contention).
BATCH = 10
ABSTRACTS = 512
WRITE_DEADLINE_S = 10.0  # short enough that 16 writers' backlog exceeds it on a 2-core CPU


async def test_sixteen_concurrent_writers_store_every_abstract_exactly_once(api: ApiClient) -> None:
    """Default settings, real SciFact abstracts: the only failure a writer may see is a
    RESOURCE_EXHAUSTED refusal, which it retries after the server's RetryInfo delay."""
    name = f"writers_{uuid.uuid4().hex[:8]}"
    await api.create(name)
    abstracts = scifact_abstracts(ABSTRACTS)
    batches: asyncio.Queue[list[pb.Document]] = asyncio.Queue()
    for i in range(0, len(abstracts), BATCH):
        batches.put_nowait([pb.Document(id=doc_id, text=text) for doc_id, text in abstracts[i : i + BATCH]])
    # No UNAVAILABLE retries: only RESOURCE_EXHAUSTED may be retried.
    indexer = Indexer(api.documents, name, call_timeout_s=WRITE_DEADLINE_S, max_unavailable_retries=0)

    async def writer() -> int:
        stored = 0
        while not batches.empty():
            response = await indexer.index_batch(batches.get_nowait())
            assert not response.errors, response.errors
            stored += response.indexed_count
        return stored

    started = time.perf_counter()
    stored = await asyncio.gather(*(writer() for _ in range(WRITERS)))
    elapsed = time.perf_counter() - started
    print(f"{ABSTRACTS} abstracts by {WRITERS} writers in {elapsed:.1f}s; {indexer.stats.refused} refusals retried")

    assert sum(stored) == ABSTRACTS
    collection = (await api.collections.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert collection.document_count == ABSTRACTS  # once each: no duplicates, nothing lost
    ids = [doc_id for doc_id, _ in abstracts]
    got = await api.documents.GetDocuments(pb.GetDocumentsRequest(collection=name, ids=ids), timeout=30)
    assert not got.missing_ids
    assert {d.id: d.text for d in got.documents} == dict(abstracts)


# --- a frozen upstream ---------------------------------------------------------------------

FAIL_MAX = 3
RESET_TIMEOUT_S = 2.0
CLIENTS = 4
CLIENT_DEADLINE_S = 2.0
FREEZE_S = 8.0
# An answer that did not wait on the frozen upstream, whose share of a call is >= 1 s. Tens of
# milliseconds here; the margin is for a busy 2-core CI machine (p99 68 ms seen there), not slack
# for waiting: a call that waited would take about 1 s.
FAST_S = 0.25


@dataclass(frozen=True)
class Outcome:
    started: float  # time.monotonic()
    elapsed: float
    code: grpc.StatusCode
    details: str  # the error's message, or why a search was degraded
    degraded: bool = False  # answered by keyword search because the query could not be embedded


@pytest.fixture
def own_mesh(stack: EmbeddedStack, tmp_path: Path) -> Iterator[EmbeddedStack]:
    """An api, embedder and search service of their own (so one can be frozen), sharing the
    session's PostgreSQL and Redis."""
    mesh = EmbeddedStack(
        tmp_path,
        replace(Ports.ephemeral(), redis=stack.ports.redis),
        extra_env={
            f"MESHSEARCH_API_{upstream}_POLICY__{field}": value
            for upstream in ("EMBEDDER", "SEARCH")
            for field, value in (("BREAKER_FAIL_MAX", str(FAIL_MAX)), ("BREAKER_RESET_TIMEOUT_S", str(RESET_TIMEOUT_S)))
        },
        database_url=stack.database_url,
        databases=stack.databases,
        redis_url=stack.redis_url,
        state_redis_url=stack.state_redis_url,
    )
    with mesh.running():
        try:
            yield mesh
        finally:  # a frozen process would not drain: thaw it before the stack stops it
            for process in mesh.processes.values():
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGCONT)


async def search_once(api: ApiClient, collection: str) -> Outcome:
    """A search with a never-seen query, so the embedding cache cannot answer it."""
    started = time.monotonic()
    request = pb.SearchRequest(collection=collection, query=f"query {uuid.uuid4().hex}")
    try:
        response = await api.search.Search(request, timeout=CLIENT_DEADLINE_S)
    except grpc.aio.AioRpcError as error:
        return Outcome(started, time.monotonic() - started, error.code(), error.details() or "")
    return Outcome(started, time.monotonic() - started, grpc.StatusCode.OK, response.degraded_reason, response.degraded)


@pytest.mark.parametrize("frozen", ["embedder", "search"])
async def test_a_frozen_upstream_is_cut_off_fast_and_the_mesh_recovers(own_mesh: EmbeddedStack, frozen: str) -> None:
    """Searches under steady traffic while one upstream is frozen (SIGSTOP). The search service
    frozen: searches fail (UNAVAILABLE, DEADLINE_EXCEEDED). The embedder frozen: searches are
    answered by keyword search, marked degraded. Either way the breaker opens within a few
    calls, answers then come fast, no call overruns its deadline, and the mesh recovers."""
    name = f"frozen_{frozen}_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{own_mesh.ports.api}") as channel:
        api = ApiClient(channel)
        await api.create(name)
        await api.index(name, {"a": "the quick brown fox"})
        outcomes: list[Outcome] = []
        stop = asyncio.Event()

        async def client() -> None:
            while not stop.is_set():
                outcomes.append(await search_once(api, name))
                await asyncio.sleep(0.005)  # a caller's pace, not a spin that saturates the api's CPU

        pid = own_mesh.processes[frozen].pid
        clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
        await waiting.until(lambda: len(outcomes) >= 2 * CLIENTS, what="searches flow before the freeze")
        os.kill(pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            await asyncio.sleep(FREEZE_S)
        finally:
            os.kill(pid, signal.SIGCONT)
        thawed_at = time.monotonic()
        recovered_at = None
        while time.monotonic() < thawed_at + RESET_TIMEOUT_S + 10:
            ok = [o for o in outcomes if o.started >= thawed_at and o.code == grpc.StatusCode.OK and not o.degraded]
            if ok:
                recovered_at = min(o.started + o.elapsed for o in ok)
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.gather(*clients)

    # Calls that began and ended while the upstream was frozen (a trial that began just before
    # SIGCONT may legitimately succeed just after it).
    during = sorted(
        (o for o in outcomes if o.started >= frozen_at and o.started + o.elapsed <= thawed_at), key=lambda o: o.started
    )
    codes = Counter(("DEGRADED" if o.degraded else o.code.name) for o in during)
    # Without the embedder, searches degrade to keyword search; without the search service they fail.
    assert set(codes) <= ({"DEGRADED"} if frozen == "embedder" else {"DEADLINE_EXCEEDED", "UNAVAILABLE"}), codes
    # No call overruns its deadline: the api answers before the client's own deadline fires.
    assert max(o.elapsed for o in outcomes) <= CLIENT_DEADLINE_S + FAST_S
    timed_out = [o for o in during if "within the deadline" in o.details or o.code == grpc.StatusCode.DEADLINE_EXCEEDED]
    assert timed_out and all(frozen in o.details for o in timed_out), timed_out[:3]
    # The breaker opens within a few calls: fail_max timeouts plus those already in flight.
    first_open = next(o for o in during if "circuit breaker" in o.details)
    slow_before_open = [o for o in during if o.started < first_open.started and o.elapsed >= FAST_S]
    assert len(slow_before_open) <= FAIL_MAX + CLIENTS, slow_before_open
    # Once open, calls are answered fast. The only slow ones are the half-open trials, which
    # wait out their budget on the frozen upstream (~1.9 s; the embedder's ~1 s, half the
    # call's time, the rest kept for the keyword answer): at most one per reset timeout.
    after_open = [o for o in during if o.started >= first_open.started]
    trials = [o for o in after_open if o.elapsed > 0.5]
    fast = sorted(o.elapsed for o in after_open if o.elapsed <= 0.5)
    assert len(fast) > 20
    assert len(trials) <= FREEZE_S / RESET_TIMEOUT_S + 1, trials
    p99 = fast[int(0.99 * (len(fast) - 1))]
    assert p99 < FAST_S, f"p99 of fast failures {p99 * 1000:.1f} ms"
    # Recovery within the reset timeout + 1 s of the upstream coming back.
    assert recovered_at is not None, "no search succeeded after the upstream came back"
    assert recovered_at - thawed_at <= RESET_TIMEOUT_S + 1.0
    print(
        f"{frozen} frozen: {dict(codes)}; {len(trials)} trials; fast failures p99 {p99 * 1000:.1f} ms; "
        f"recovered {recovered_at - thawed_at:.2f}s after SIGCONT"
    )
