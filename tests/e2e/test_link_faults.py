"""Network faults between the api and its upstreams (tests/faults/proxy.py on each hop), while
searches run: no call outlives its deadline, and the mesh recovers by itself once the link does.

The hardest of them is a link that goes silent without a reset (a node that vanished): nothing
tells the client, so without keepalive its connection stays "ready" and every call on it waits
for its deadline, the breaker's trial calls included, for as long as TCP takes to give up.
With keepalive (meshsearch_common.keepalive) the dead connection is dropped within
KEEPALIVE_TIME_S + KEEPALIVE_TIMEOUT_S and the next call opens a new one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.stack import EmbeddedStack, Ports
from meshsearch_common.keepalive import KEEPALIVE_TIME_S, KEEPALIVE_TIMEOUT_S
from tests.faults.proxy import Fault, FaultProxy

RESET_TIMEOUT_S = 2.0
DEADLINE_S = 5.0
LATE_S = 0.5  # past its deadline by more than this, a call counts as held too long


@dataclass
class LinkedApi:
    api: EmbeddedStack
    to_search: FaultProxy
    to_embedder: FaultProxy
    collection: str


@dataclass(frozen=True)
class Call:
    code: grpc.StatusCode
    seconds: float
    degraded: bool = False


@pytest.fixture(scope="module")
def linked(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkedApi]:
    """An api of its own whose links to the session's search service and embedder each run
    through a fault proxy, with a collection to search."""
    with FaultProxy(stack.ports.search) as to_search, FaultProxy(stack.ports.embedder) as to_embedder:
        api = EmbeddedStack(
            tmp_path_factory.mktemp("linked"),
            replace(Ports.ephemeral(), search=stack.ports.search, embedder=stack.ports.embedder),
            caller_token=stack.caller_token,
            extra_env={
                "MESHSEARCH_API_SEARCH_TARGET": f"127.0.0.1:{to_search.port}",
                "MESHSEARCH_API_EMBEDDER_TARGET": f"127.0.0.1:{to_embedder.port}",
                "MESHSEARCH_API_SEARCH_POLICY__BREAKER_RESET_TIMEOUT_S": str(RESET_TIMEOUT_S),
                "MESHSEARCH_API_EMBEDDER_POLICY__BREAKER_RESET_TIMEOUT_S": str(RESET_TIMEOUT_S),
            },
            database_url=stack.database_url,
            databases=stack.databases,
            redis_url=stack.redis_url,
            state_redis_url=stack.state_redis_url,
        )
        with api.running(services=("api",)):
            collection = f"links_{uuid.uuid4().hex[:8]}"
            with grpc.insecure_channel(f"127.0.0.1:{api.ports.api}") as channel:
                pb_grpc.CollectionServiceStub(channel).CreateCollection(
                    pb.CreateCollectionRequest(collection=pb.Collection(name=collection)), timeout=30
                )
                pb_grpc.DocumentServiceStub(channel).IndexDocuments(
                    pb.IndexDocumentsRequest(
                        collection=collection,
                        documents=[
                            pb.Document(id="a", text="the quick brown fox"),
                            pb.Document(id="b", text="a lazy dog sleeps"),
                        ],
                    ),
                    timeout=60,
                )
            yield LinkedApi(api, to_search, to_embedder, collection)


def search(linked: LinkedApi, timeout_s: float = DEADLINE_S) -> Call:
    """One vector search with a new query (the embedding cache cannot answer it)."""
    started = time.monotonic()
    with grpc.insecure_channel(f"127.0.0.1:{linked.api.ports.api}") as channel:
        try:
            answer = pb_grpc.SearchServiceStub(channel).Search(
                pb.SearchRequest(collection=linked.collection, query=f"quick brown fox {uuid.uuid4().hex}"),
                timeout=timeout_s,
            )
        except grpc.RpcError as error:
            return Call(error.code(), time.monotonic() - started)
    return Call(grpc.StatusCode.OK, time.monotonic() - started, answer.degraded)


def searches_until_recovered(linked: LinkedApi, within_s: float) -> tuple[list[Call], float]:
    """Search until a search is answered in full (not degraded); the calls, and how long it took."""
    started = time.monotonic()
    calls: list[Call] = []
    while time.monotonic() - started < within_s:
        call = search(linked)
        calls.append(call)
        if call.code == grpc.StatusCode.OK and not call.degraded:
            return calls, time.monotonic() - started
        time.sleep(0.2)
    return calls, float("inf")


def held_too_long(calls: list[Call], deadline_s: float = DEADLINE_S) -> list[Call]:
    return [c for c in calls if c.seconds > deadline_s + LATE_S]


def test_a_search_node_that_vanishes_is_dropped_by_keepalive_and_searches_recover(linked: LinkedApi) -> None:
    assert search(linked).code == grpc.StatusCode.OK
    connections = linked.to_search.connections
    linked.to_search.set(Fault.VANISH)  # the open connection goes silent for good; a new one works
    try:
        bound_s = KEEPALIVE_TIME_S + KEEPALIVE_TIMEOUT_S + RESET_TIMEOUT_S + DEADLINE_S + 5
        calls, recovered_s = searches_until_recovered(linked, within_s=3 * bound_s)
    finally:
        linked.to_search.set(Fault.PASS)
    print(f"vanished search node: recovered in {recovered_s:.1f} s over {len(calls)} calls")
    assert recovered_s <= bound_s, f"not recovered within {bound_s} s: {calls[-3:]}"
    assert linked.to_search.connections > connections, "the api opened a new connection"
    assert not held_too_long(calls), held_too_long(calls)
    assert {c.code for c in calls} <= {
        grpc.StatusCode.OK,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }


def test_a_silent_embedder_link_degrades_searches_within_their_deadline_then_heals(linked: LinkedApi) -> None:
    """Accepted but never answered, both ways: searches fall back to keyword search (degraded)
    inside their deadline, none held past it; once the link answers again, searches are by
    vector again."""
    linked.to_embedder.set(Fault.SILENT)
    try:
        during = [search(linked) for _ in range(6)]
    finally:
        linked.to_embedder.set(Fault.PASS)
    after, recovered_s = searches_until_recovered(linked, within_s=60)
    print(f"silent embedder link: {[c.code.name for c in during]}, recovered in {recovered_s:.1f} s")
    assert not held_too_long(during + after), held_too_long(during + after)
    assert all(c.code == grpc.StatusCode.OK and c.degraded for c in during), during
    assert recovered_s < 60


def test_latency_and_jitter_on_the_embedder_link_slow_searches_but_fail_none(linked: LinkedApi) -> None:
    linked.to_embedder.set(Fault.delay(0.15, 0.1))
    try:
        calls = [search(linked) for _ in range(8)]
    finally:
        linked.to_embedder.set(Fault.PASS)
    assert all(c.code == grpc.StatusCode.OK and not c.degraded for c in calls), calls
    assert min(c.seconds for c in calls) >= 0.05, "the delay was on the path"
    assert not held_too_long(calls)


def test_resets_on_the_search_link_are_retried_and_leave_no_call_hanging(linked: LinkedApi) -> None:
    assert search(linked).code == grpc.StatusCode.OK
    linked.to_search.set(Fault.RESET)  # every open connection reset, and new ones refused
    try:
        during = [search(linked, timeout_s=2.0) for _ in range(3)]
    finally:
        linked.to_search.set(Fault.PASS)
    after, recovered_s = searches_until_recovered(linked, within_s=30)
    print(f"reset search link: {[c.code.name for c in during]}, recovered in {recovered_s:.1f} s")
    assert not held_too_long(during, 2.0) and not held_too_long(after)
    assert {c.code for c in during} <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
    assert recovered_s <= RESET_TIMEOUT_S + 5


def test_a_throttled_search_link_ends_a_large_write_at_its_deadline_not_after(linked: LinkedApi) -> None:
    """At 16 KiB/s, a write of 200 documents (their vectors are ~300 KiB) cannot finish in 3 s:
    it ends DEADLINE_EXCEEDED at its deadline; small searches on the same link still answer."""
    documents = [pb.Document(id=f"t{i}", text=f"throttled document number {i}") for i in range(200)]
    linked.to_search.set(Fault.throttle(16 * 1024))
    try:
        started = time.monotonic()
        with grpc.insecure_channel(f"127.0.0.1:{linked.api.ports.api}") as channel:
            try:
                pb_grpc.DocumentServiceStub(channel).IndexDocuments(
                    pb.IndexDocumentsRequest(collection=linked.collection, documents=documents), timeout=3.0
                )
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
        took = time.monotonic() - started
    finally:
        linked.to_search.set(Fault.PASS)
    print(f"throttled search link: a 200-document write ended {code.name} after {took:.2f} s")
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED and took <= 3.0 + LATE_S
    _, recovered_s = searches_until_recovered(linked, within_s=30)
    assert recovered_s < 30


def test_the_servers_accept_the_clients_keepalive_pings_on_an_idle_link(linked: LinkedApi) -> None:
    """The api pings the search service every KEEPALIVE_TIME_S even while idle. A gRPC server
    by default takes more than two such pings without data as abuse and drops the connection
    (GOAWAY too_many_pings); ours accept them, so an idle link stays the one connection."""
    assert search(linked).code == grpc.StatusCode.OK
    connections = linked.to_search.connections
    time.sleep(4 * KEEPALIVE_TIME_S)  # four pings, idle
    assert search(linked).code == grpc.StatusCode.OK
    assert linked.to_search.connections == connections, "the idle connection was dropped"
