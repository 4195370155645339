"""The public Python client (meshsearch.client), sync and async, against an in-process server
that answers from a script: which failures it retries, how long it waits, what it sends."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.client import NO_RETRIES, AsyncClient, Client, Connection, RetryPolicy, error_details
from meshsearch.client.connection import PlaintextKey
from meshsearch.client.retries import delay_before_retry

KEY = "msk_0123456789abcdef_secret"


@dataclass
class Script:
    """What the fake api answers: failures in order, then success; and what it saw."""

    failures: list[tuple[grpc.StatusCode, float | None]] = field(default_factory=list)
    seen: list[dict[str, str]] = field(default_factory=list)
    seen_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(
        self, context: grpc.ServicerContext
    ) -> tuple[grpc.StatusCode, str, tuple[tuple[str, bytes], ...]] | None:
        with self.lock:
            self.seen.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
            self.seen_at.append(time.monotonic())
            if not self.failures:
                return None
            code, retry_after = self.failures.pop(0)
        status = status_pb2.Status(code=code.value[0], message=f"scripted {code.name}")
        if retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(int(retry_after * 1000))
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return code, status.message, (("grpc-status-details-bin", status.SerializeToString()),)


class FakeCollections(pb_grpc.CollectionServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def _respond(self, context: grpc.ServicerContext, name: str) -> pb.Collection:
        failure = self.script.answer(context)
        if failure:
            code, message, trailers = failure
            context.set_trailing_metadata(trailers)
            context.abort(code, message)
        return pb.Collection(name=name)

    def CreateCollection(self, request, context):  # noqa: N802
        return pb.CreateCollectionResponse(collection=self._respond(context, request.collection.name))

    def GetCollection(self, request, context):  # noqa: N802
        return pb.GetCollectionResponse(collection=self._respond(context, request.name))


class FakeIngest(pb_grpc.IngestServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def WatchJob(self, request, context):  # noqa: N802
        self.script.answer(context)
        yield pb.WatchJobResponse(job=pb.Job(id=request.job_id))


@pytest.fixture
def script() -> Script:
    return Script()


@pytest.fixture
def target(script: Script) -> Iterator[str]:
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_CollectionServiceServicer_to_server(FakeCollections(script), server)
    pb_grpc.add_IngestServiceServicer_to_server(FakeIngest(script), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


FAST = RetryPolicy(initial_backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
async def aio_client(target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(Connection(target, api_key=KEY), retry=FAST) as client:
        yield client


async def test_a_refusal_with_retry_info_is_retried_after_the_delay_even_when_not_idempotent(
    aio_client: AsyncClient, script: Script
) -> None:
    script.failures = [(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.2), (grpc.StatusCode.RESOURCE_EXHAUSTED, 0.2)]
    created = await aio_client.create_collection("papers")
    assert created.name == "papers"
    assert len(script.seen) == 3
    gaps = [later - earlier for earlier, later in zip(script.seen_at, script.seen_at[1:], strict=False)]
    assert all(0.2 <= gap < 0.6 for gap in gaps), gaps  # the server's delay, stretched by at most 20%
    assert {seen["authorization"] for seen in script.seen} == {f"Bearer {KEY}"}
    assert len({seen["x-request-id"] for seen in script.seen}) == 1  # one logical call in the logs


async def test_unavailable_is_retried_only_for_methods_the_contract_marks_idempotent(
    aio_client: AsyncClient, script: Script
) -> None:
    script.failures = [(grpc.StatusCode.UNAVAILABLE, None)] * 2
    answer = await aio_client.collections.GetCollection(pb.GetCollectionRequest(name="papers"))
    assert answer.collection.name == "papers" and len(script.seen) == 3

    script.seen.clear()
    script.failures = [(grpc.StatusCode.UNAVAILABLE, None)]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await aio_client.create_collection("papers")  # may have been applied: not repeated
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and len(script.seen) == 1


async def test_caller_errors_and_waits_past_the_deadline_are_final_at_once(target: str, script: Script) -> None:
    async with AsyncClient(Connection(target), timeout_s=1.0, retry=FAST) as client:
        script.failures = [(grpc.StatusCode.INVALID_ARGUMENT, None)]
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.create_collection("bad name")
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        script.failures = [(grpc.StatusCode.RESOURCE_EXHAUSTED, 5.0)]  # longer than the 1 s deadline
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await client.create_collection("papers")
        assert time.monotonic() - started < 0.5
        assert error_details(raised.value)["RetryInfo"].retry_delay.seconds == 5  # the caller can act on it
    assert all("authorization" not in seen for seen in script.seen)  # no key configured, none sent


async def test_retries_stop_after_max_attempts_and_can_be_turned_off(target: str, script: Script) -> None:
    async with AsyncClient(Connection(target), retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.01)) as client:
        script.failures = [(grpc.StatusCode.UNAVAILABLE, None)] * 5
        with pytest.raises(grpc.aio.AioRpcError):
            await client.collections.GetCollection(pb.GetCollectionRequest(name="papers"))
        assert len(script.seen) == 3
    script.seen.clear()
    async with AsyncClient(Connection(target), retry=NO_RETRIES) as client:
        script.failures = [(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.01)]
        with pytest.raises(grpc.aio.AioRpcError):
            await client.create_collection("papers")
        assert len(script.seen) == 1


async def test_streams_carry_the_key_and_request_id(aio_client: AsyncClient, script: Script) -> None:
    updates = [update async for update in aio_client.ingest.WatchJob(pb.WatchJobRequest(job_id="j1"))]
    assert updates[0].job.id == "j1"
    assert script.seen[0]["authorization"] == f"Bearer {KEY}" and script.seen[0]["x-request-id"]


async def test_many_concurrent_callers_refused_together_are_spread_out(aio_client: AsyncClient, script: Script) -> None:
    script.failures = [(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.3)] * 20
    await asyncio.gather(*(aio_client.create_collection(f"c{i}") for i in range(20)))
    retried_at = sorted(script.seen_at[20:])
    assert len(retried_at) == 20
    assert retried_at[-1] - retried_at[0] > 0.02  # jitter: not one thundering herd


def test_the_sync_client_retries_the_same_way(target: str, script: Script) -> None:
    with Client(Connection(target, api_key=KEY), retry=FAST) as client:
        script.failures = [(grpc.StatusCode.RESOURCE_EXHAUSTED, 0.1), (grpc.StatusCode.UNAVAILABLE, None)]
        with pytest.raises(grpc.RpcError) as raised:
            client.create_collection("papers")  # retried the refusal, then UNAVAILABLE is final
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert len(script.seen) == 2
        assert script.seen_at[1] - script.seen_at[0] >= 0.1

        script.seen.clear()
        script.failures = [(grpc.StatusCode.UNAVAILABLE, None)] * 2
        assert client.collections.GetCollection(pb.GetCollectionRequest(name="x")).collection.name == "x"
        assert len(script.seen) == 3
        assert len({seen["x-request-id"] for seen in script.seen}) == 1
        assert [u.job.id for u in client.ingest.WatchJob(pb.WatchJobRequest(job_id="j2"))] == ["j2"]
        assert script.seen[-1]["authorization"] == f"Bearer {KEY}"


def test_connection_from_the_environment() -> None:
    connection = Connection.from_env(
        {"MESHSEARCH_TARGET": "api:443", "MESHSEARCH_API_KEY": KEY, "MESHSEARCH_TLS_CA_FILE": "/ca.pem"}
    )
    assert (connection.target, connection.api_key, connection.tls.ca_file) == ("api:443", KEY, "/ca.pem")
    assert Connection.from_env({}, target="other:1").target == "other:1"
    assert Connection.from_env({}).tls.enabled is False


def test_the_retry_decision() -> None:
    policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.1, max_backoff_s=1.0, max_wait_s=10)
    rng = random.Random(7)
    exhausted, unavailable = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE
    assert 2.0 <= delay_before_retry(policy, 1, exhausted, 2.0, False, None, rng) <= 2.4  # type: ignore[operator]
    assert delay_before_retry(policy, 1, exhausted, None, True, None, rng) is None  # no RetryInfo: a hard quota
    assert delay_before_retry(policy, 1, exhausted, 60.0, True, None, rng) is None  # "come back tomorrow"
    assert delay_before_retry(policy, 1, exhausted, 2.0, True, 1.0, rng) is None  # past the deadline
    assert delay_before_retry(policy, 3, exhausted, 0.1, True, None, rng) is None  # out of attempts
    assert delay_before_retry(policy, 1, unavailable, None, False, None, rng) is None
    backoffs = [delay_before_retry(policy, 2, unavailable, None, True, None, rng) for _ in range(200)]
    assert all(0 <= b <= 0.2 for b in backoffs) and len(set(backoffs)) > 100  # type: ignore[operator]
    assert delay_before_retry(policy, 2, unavailable, 0.5, True, None, rng) == 0.5  # never sooner than asked
    assert delay_before_retry(policy, 1, grpc.StatusCode.INTERNAL, 1.0, True, None, rng) is None
    assert code_pb2.RESOURCE_EXHAUSTED == exhausted.value[0]


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50051",
        "localhost:50051",
        "[::1]:50051",
        "dns:///localhost:50051",
        "ipv4:127.0.0.1:1,127.0.0.2:2",
        "unix:/run/api.sock",
    ],
)
def test_a_key_may_go_in_plaintext_to_this_machine(target: str) -> None:
    assert Connection(target, api_key="msk_x").target == target


@pytest.mark.parametrize(
    "target",
    [
        "api.internal:50051",
        "dns:///api.internal:50051",
        "10.0.0.5:50051",
        "ipv4:127.0.0.1:1,10.0.0.5:2",
        "127.0.0.1.attacker.example:50051",  # a name that merely starts like loopback
        "localhost.attacker.example:50051",
        "dns:///127.0.0.1.attacker.example:50051",
    ],
)
def test_a_key_is_never_sent_in_plaintext_off_this_machine_unless_allowed(target: str) -> None:
    with pytest.raises(PlaintextKey, match="MESHSEARCH_ALLOW_PLAINTEXT_KEY"):
        Connection(target, api_key="msk_x")
    assert Connection(target, api_key="msk_x", allow_plaintext_key=True).api_key == "msk_x"
    assert Connection(target).api_key == ""  # no key, nothing to leak
    env = {"MESHSEARCH_TARGET": target, "MESHSEARCH_API_KEY": "msk_x", "MESHSEARCH_ALLOW_PLAINTEXT_KEY": "true"}
    assert Connection.from_env(env).allow_plaintext_key
