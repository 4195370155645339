"""Limits before work (issue 28, points 2 and 3): no caller, with a key or without, can make the
api hold more than a bounded amount of memory or CPU. Each case runs against real api
processes, and the flood cases measure the api's resident memory while they run (sampled every
few milliseconds by a thread), not just the status codes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import psutil
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_common.errors import error_details
from meshsearch_harness.secured import SecuredApis, bearer, start_secured_apis

MiB = 1024 * 1024
TIMEOUT_S = 60
HUGE = 48 * MiB
CLIENT_OPTIONS = [("grpc.max_send_message_length", 128 * MiB), ("grpc.max_receive_message_length", 128 * MiB)]


def reason_of(error: grpc.RpcError) -> str:
    return str(error_details(error)["ErrorInfo"].reason)


@dataclass
class PeakRss:
    """The highest resident set size of a process while the `with` block ran, above its start."""

    process: psutil.Process
    start: int = 0
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MiB

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    @contextmanager
    def watching(self) -> Iterator[PeakRss]:
        self.start = self.peak = self.process.memory_info().rss
        sampler = threading.Thread(target=self._sample, daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            self._stop.set()
            sampler.join()


def api_process(apis: SecuredApis) -> psutil.Process:
    return psutil.Process(apis.replicas[0].processes["api"].pid)


@pytest.fixture(scope="module")
def defaults(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApis]:
    """One api replica with the shipped limits (its lockouts off: the flood tests fail on purpose)."""
    yield from start_secured_apis(stack, tmp_path_factory.mktemp("defaults"), count=1)


NARROW = {
    "MESHSEARCH_API_MAX_CONCURRENT_RPCS": "12",
    "MESHSEARCH_API_KEY_MAX_STREAMS": "2",
    "MESHSEARCH_API_AUTH_MAX_WAITING_VERIFICATIONS": "2",
    "MESHSEARCH_API_AUTH_MAX_FAILURES_PER_KEY": "3",
}


@pytest.fixture(scope="module")
def narrow(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApis]:
    """One api replica with small bounds, so that each can be reached in a test."""
    yield from start_secured_apis(stack, tmp_path_factory.mktemp("narrow"), extra_env=NARROW, count=1)


@pytest.fixture(scope="module")
def strict(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApis]:
    """One api replica that locks out an address after 5 failed authentications."""
    env = {"MESHSEARCH_API_AUTH_MAX_FAILURES_PER_PEER": "5", "MESHSEARCH_API_AUTH_FAILURE_WINDOW_S": "30"}
    yield from start_secured_apis(stack, tmp_path_factory.mktemp("strict"), extra_env=env, count=1)


async def codes_of(*calls: asyncio.Future[object] | asyncio.Task[object]) -> list[grpc.aio.AioRpcError | object]:
    return list(await asyncio.gather(*calls, return_exceptions=True))


async def test_an_unauthenticated_flood_of_huge_searches_is_refused_before_it_is_read(defaults: SecuredApis) -> None:
    query = "x" * HUGE
    async with grpc.aio.insecure_channel(defaults.target(), options=CLIENT_OPTIONS) as channel:
        search = pb_grpc.SearchServiceStub(channel).Search
        with pytest.raises(grpc.aio.AioRpcError):  # the process's first call sets up what every call uses
            await search(pb.SearchRequest(collection="docs", query="q"), timeout=TIMEOUT_S)
        with PeakRss(api_process(defaults)).watching() as rss:
            started = time.perf_counter()
            answers = await codes_of(
                *(search(pb.SearchRequest(collection="docs", query=query), timeout=TIMEOUT_S) for _ in range(4))
            )
            elapsed = time.perf_counter() - started
    codes = [a.code() if isinstance(a, grpc.aio.AioRpcError) else "OK" for a in answers]
    print(f"4 unauthenticated 48 MiB searches: {codes}, {elapsed:.2f} s, api RSS +{rss.growth_mib:.1f} MiB")
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 4
    # Before: +284 MiB (every body read and parsed before the key was asked for).
    # Less than one body of the four: none was held (what remains, 9 to 25 MiB in our runs, is
    # gRPC's flow-control buffers and the process's allocator).
    assert rss.growth_mib < HUGE / MiB, "a refused caller's body must not be held"


async def test_a_keyed_search_over_its_methods_limit_is_refused_unparsed(defaults: SecuredApis) -> None:
    key = defaults.new_key("limits", pb.ROLE_READ)
    async with grpc.aio.insecure_channel(defaults.target(), options=CLIENT_OPTIONS) as channel:
        search = pb_grpc.SearchServiceStub(channel).Search
        # The key's first use pays its argon2 verification (64 MiB of memory, by design): before measuring.
        with pytest.raises(grpc.aio.AioRpcError):
            await search(pb.SearchRequest(collection="no-such-collection", query="q"), metadata=bearer(key))
        with PeakRss(api_process(defaults)).watching() as rss:
            over_method = search(pb.SearchRequest(collection="docs", query="x" * MiB), metadata=bearer(key))
            over_server = search(pb.SearchRequest(collection="docs", query="x" * HUGE), metadata=bearer(key))
            answers = await codes_of(
                over_method,
                over_server,
                *(
                    search(pb.SearchRequest(collection="docs", query="x" * HUGE), metadata=bearer(key))
                    for _ in range(3)
                ),
            )
    errors = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(errors) == len(answers)
    assert errors[0].code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(errors[0]) == "MESSAGE_TOO_LARGE"
    assert "limit of" in (errors[0].details() or "")
    # Over the largest request any method takes: gRPC refuses it while reading.
    assert {e.code() for e in errors[1:]} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    print(f"keyed 1 MiB + 4 x 48 MiB searches: api RSS +{rss.growth_mib:.1f} MiB")
    # Less than one 48 MiB body (14 to 36 MiB in our runs): gRPC refused those from their length
    # prefix; the 1 MiB one was read but never parsed.
    assert rss.growth_mib < HUGE / MiB


async def _estimate_messages(count: int, text_bytes: int) -> AsyncIterator[pb.EstimateIngestRequest]:
    for i in range(count):
        document = pb.Document(id=f"big-{i}", text="y" * text_bytes)
        yield pb.EstimateIngestRequest(collection="docs" if i == 0 else "", documents=[document])


async def test_an_estimate_of_huge_texts_holds_one_message_at_a_time(defaults: SecuredApis) -> None:
    """Before: 12 messages of one 24 MiB text each, from a read-only key, were all kept and
    answered OK after 15 s (api RSS +485 MiB, its pod's limit being 512 MiB)."""
    writer = defaults.new_key("estimates")
    reader = defaults.new_key("estimates", pb.ROLE_READ)
    async with grpc.aio.insecure_channel(defaults.target(), options=CLIENT_OPTIONS) as channel:
        collections = pb_grpc.CollectionServiceStub(channel)
        try:
            await collections.CreateCollection(
                pb.CreateCollectionRequest(collection=pb.Collection(name="docs")), metadata=bearer(writer)
            )
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        estimate = pb_grpc.IngestServiceStub(channel).EstimateIngest
        await estimate(_estimate_messages(1, 10), metadata=bearer(reader), timeout=TIMEOUT_S)  # the key verified
        with PeakRss(api_process(defaults)).watching() as huge:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await estimate(_estimate_messages(1, 24 * MiB), metadata=bearer(reader), timeout=TIMEOUT_S)
        # Under the api's 4 MiB per message but far over the 64 KiB a text may have: checked, not kept.
        with PeakRss(api_process(defaults)).watching() as large:
            answer = await estimate(_estimate_messages(80, 3 * MiB), metadata=bearer(reader), timeout=TIMEOUT_S)
    print(
        f"estimate of a 24 MiB text: {refused.value.code().name}, api RSS +{huge.growth_mib:.1f} MiB; "
        f"of 80 x 3 MiB texts: api RSS +{large.growth_mib:.1f} MiB"
    )
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert huge.growth_mib < 24  # the 24 MiB message was refused from its length, never held
    assert answer.documents == 80
    assert [(v.limit, v.documents) for v in answer.violations] == [("max_text_bytes", 80)]
    assert large.growth_mib < 100  # one 3 MiB message read, parsed and checked at a time (all: 240 MiB and more)


async def _held_open(release: asyncio.Event) -> AsyncIterator[pb.EstimateIngestRequest]:
    await release.wait()
    yield pb.EstimateIngestRequest(collection="docs")


async def test_a_key_holds_a_bounded_number_of_streams(narrow: SecuredApis) -> None:
    key, other = narrow.new_key("streams", pb.ROLE_READ), narrow.new_key("streams", pb.ROLE_READ)
    release = asyncio.Event()
    async with grpc.aio.insecure_channel(narrow.target()) as channel:
        estimate = pb_grpc.IngestServiceStub(channel).EstimateIngest
        held = [estimate(_held_open(release), metadata=bearer(key), timeout=TIMEOUT_S) for _ in range(2)]
        await asyncio.sleep(0.5)  # both admitted and holding their slots
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await estimate(_held_open(release), metadata=bearer(key), timeout=TIMEOUT_S)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason_of(refused.value) == "TOO_MANY_STREAMS"
        another = estimate(_held_open(release), metadata=bearer(other), timeout=TIMEOUT_S)  # not this key's
        await asyncio.sleep(0.3)
        assert not another.done()
        release.set()
        answers = await codes_of(*held, another)
    # The held streams end with the api's own answer about their (empty) sample, not a refusal.
    assert all(
        isinstance(a, grpc.aio.AioRpcError) and a.code() != grpc.StatusCode.RESOURCE_EXHAUSTED for a in answers
    ), answers


async def test_calls_past_the_servers_bound_are_refused_at_once(narrow: SecuredApis) -> None:
    keys = [narrow.new_key("inflight", pb.ROLE_READ) for _ in range(6)]
    release = asyncio.Event()
    async with grpc.aio.insecure_channel(narrow.target()) as channel:
        for key in keys:  # verified one at a time (this replica lets only two verifications wait)
            await pb_grpc.CollectionServiceStub(channel).ListCollections(
                pb.ListCollectionsRequest(), metadata=bearer(key), timeout=TIMEOUT_S
            )
        estimate = pb_grpc.IngestServiceStub(channel).EstimateIngest
        held = [estimate(_held_open(release), metadata=bearer(k), timeout=TIMEOUT_S) for k in keys for _ in range(2)]
        await asyncio.sleep(0.5)
        assert not any(call.done() for call in held), [await c for c in held if c.done()]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await pb_grpc.CollectionServiceStub(channel).ListCollections(
                pb.ListCollectionsRequest(), metadata=bearer(keys[0]), timeout=TIMEOUT_S
            )
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        await codes_of(*held)
        listed = await pb_grpc.CollectionServiceStub(channel).ListCollections(
            pb.ListCollectionsRequest(), metadata=bearer(keys[0]), timeout=TIMEOUT_S
        )
    assert listed is not None


@pytest.fixture(scope="module")
def idle_bounded(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApis]:
    """One api replica whose read budget is two messages, and whose streams end after 3 s idle."""
    env = {"MESHSEARCH_API_MAX_REQUEST_BYTES_IN_FLIGHT": str(8 * MiB), "MESHSEARCH_API_STREAM_IDLE_TIMEOUT_S": "3"}
    yield from start_secured_apis(stack, tmp_path_factory.mktemp("idle"), extra_env=env, count=1)


async def test_an_idle_stream_is_ended_and_gives_its_budget_back(idle_bounded: SecuredApis) -> None:
    key = idle_bounded.new_key("idle", pb.ROLE_READ)
    release = asyncio.Event()
    async with grpc.aio.insecure_channel(idle_bounded.target()) as channel:
        list_collections = pb_grpc.CollectionServiceStub(channel).ListCollections
        await list_collections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=TIMEOUT_S)  # verified
        estimate = pb_grpc.IngestServiceStub(channel).EstimateIngest
        opened = time.monotonic()
        idle = [estimate(_held_open(release), metadata=bearer(key), timeout=TIMEOUT_S) for _ in range(2)]
        await asyncio.sleep(0.3)
        with pytest.raises(grpc.aio.AioRpcError) as busy:  # the two idle streams hold the whole budget
            await list_collections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=TIMEOUT_S)
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and reason_of(busy.value) == "SERVER_BUSY"
        ended = await codes_of(*idle)
        waited_s = time.monotonic() - opened
        assert all(
            isinstance(e, grpc.aio.AioRpcError)
            and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            and reason_of(e) == "STREAM_IDLE"
            for e in ended
        ), ended
        assert 2.5 < waited_s < 10, waited_s
        listed = await list_collections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=TIMEOUT_S)
        release.set()
    assert listed is not None


def _wrong_secret(key: str, n: int) -> str:
    """The same key id with another (well-formed) secret, the `n`th such."""
    return key[:-43] + f"{n:043d}"


async def test_a_flood_of_wrong_secrets_waits_in_a_bounded_queue(narrow: SecuredApis) -> None:
    key = narrow.new_key("argon")
    async with grpc.aio.insecure_channel(narrow.target()) as channel:
        search = pb_grpc.SearchServiceStub(channel).Search
        answers = await codes_of(
            *(
                search(
                    pb.SearchRequest(collection="docs", query="q"),
                    metadata=bearer(_wrong_secret(key, i)),
                    timeout=TIMEOUT_S,
                )
                for i in range(40)
            )
        )
    errors = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert len(errors) == 40
    reasons = {reason_of(e) for e in errors}
    assert reasons <= {"INVALID_API_KEY", "VERIFICATION_QUEUE_FULL"}, reasons
    assert "VERIFICATION_QUEUE_FULL" in reasons


async def test_a_key_id_with_too_many_wrong_secrets_is_not_verified_again(narrow: SecuredApis) -> None:
    used, fresh = narrow.new_key("lockout"), narrow.new_key("lockout")
    async with grpc.aio.insecure_channel(narrow.target()) as channel:
        list_collections = pb_grpc.CollectionServiceStub(channel).ListCollections
        await list_collections(pb.ListCollectionsRequest(), metadata=bearer(used), timeout=TIMEOUT_S)  # verified
        for key in (used, fresh):
            for n in range(3):  # three different wrong secrets: a repeated one is refused from a cache
                with pytest.raises(grpc.aio.AioRpcError) as wrong:
                    await list_collections(
                        pb.ListCollectionsRequest(), metadata=bearer(_wrong_secret(key, n)), timeout=TIMEOUT_S
                    )
                assert reason_of(wrong.value) == "INVALID_API_KEY"
        # The holder whose secret this replica verified before keeps working...
        await list_collections(pb.ListCollectionsRequest(), metadata=bearer(used), timeout=TIMEOUT_S)
        # ...while a right secret never verified here waits out the lockout, told nothing new.
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await list_collections(pb.ListCollectionsRequest(), metadata=bearer(fresh), timeout=TIMEOUT_S)
    assert locked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(locked.value) == "INVALID_API_KEY"


async def test_an_address_that_keeps_failing_is_refused_before_any_lookup(strict: SecuredApis) -> None:
    key = strict.new_key("peer", pb.ROLE_READ)
    async with grpc.aio.insecure_channel(strict.target()) as channel:
        list_collections = pb_grpc.CollectionServiceStub(channel).ListCollections
        await list_collections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=TIMEOUT_S)
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as wrong:
                await list_collections(pb.ListCollectionsRequest(), metadata=bearer("msk_nonsense"), timeout=TIMEOUT_S)
            assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as locked:
            await list_collections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=TIMEOUT_S)
    assert locked.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = error_details(locked.value)
    assert details["ErrorInfo"].reason == "TOO_MANY_FAILED_AUTHENTICATIONS"
    assert details["RetryInfo"].retry_delay.seconds == 30
