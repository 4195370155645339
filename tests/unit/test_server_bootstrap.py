"""The common server bootstrap: health, reflection, error mapping and graceful drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshsearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from meshsearch_common.errors import InvalidArgument
from meshsearch_common.server import RunningService, start_service
from meshsearch_common.settings import ServiceSettings
from tests import waiting

SERVICE = embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"].full_name


class SlowInfo(embedder_pb2_grpc.EmbedderServiceServicer):
    """Info answers only once `release` is set (to be caught in flight), and sets `started` when
    a call arrives; Tokenize fails like a buggy or picky core."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def Info(self, request, context):
        self.started.set()
        await self.release.wait()
        return embedder_pb2.InfoResponse(model_id="slow")

    async def Tokenize(self, request, context):
        if request.prompt_name == "bug":
            raise RuntimeError("a bug")
        raise InvalidArgument("texts[0] is empty")


class FakeApp:
    name = "fake"
    settings = ServiceSettings(port=0, metrics_port=0)

    def __init__(self) -> None:
        self.stopped = False
        self.servicer = SlowInfo()

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(self.servicer, server)
        return [SERVICE]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture
async def running() -> AsyncIterator[RunningService]:
    app = FakeApp()
    service = await start_service(app, ServiceSettings(port=0, metrics_port=0))
    yield service
    app.servicer.release.set()
    await service.stop(0)


async def test_health_reports_serving_and_reflection_lists_services(running: RunningService) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        health = await stub.Check(health_pb2.HealthCheckRequest(service=SERVICE))  # type: ignore[attr-defined]  # typeshed lists no methods
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(  # type: ignore[operator, arg-type]  # typeshed types the sync stub only
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {service.name async for response in stream for service in response.list_services_response.service}
        # v1, as grpcurl and buf curl ask first: same messages under the new service name.
        v1 = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = [
            answer
            async for answer in v1(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE),
                    ]
                )
            )
        ]
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert SERVICE in {service.name for service in answers[0].list_services_response.service}
    assert answers[1].file_descriptor_response.file_descriptor_proto, answers[1]


async def test_domain_errors_become_their_status_and_bugs_become_internal(running: RunningService) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await stub.Tokenize(embedder_pb2.TokenizeRequest())
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert invalid.value.details() == "texts[0] is empty"
        with pytest.raises(grpc.aio.AioRpcError) as bug:
            await stub.Tokenize(embedder_pb2.TokenizeRequest(prompt_name="bug"))
        assert bug.value.code() == grpc.StatusCode.INTERNAL


async def test_stop_drains_in_flight_calls_and_reports_not_serving() -> None:
    app = FakeApp()
    service = await start_service(app, ServiceSettings(port=0, metrics_port=0))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        in_flight = asyncio.ensure_future(
            embedder_pb2_grpc.EmbedderServiceStub(channel).Info(embedder_pb2.InfoRequest())
        )
        await asyncio.wait_for(app.servicer.started.wait(), 10)
        stopping = asyncio.create_task(service.stop(grace_s=5))

        async def not_serving() -> bool:
            check = service.health.Check(health_pb2.HealthCheckRequest(service=SERVICE), None)  # type: ignore[arg-type]  # no context needed
            return (await check).status == health_pb2.HealthCheckResponse.NOT_SERVING

        await waiting.until(not_serving, what="health reports NOT_SERVING while draining")
        assert not in_flight.done()  # drained, not cut off
        app.servicer.release.set()
        assert (await in_flight).model_id == "slow"
        await stopping
    assert app.stopped


def handled(method: str, code: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("meshsearch_rpc_handled_total", {"method": method, "code": code}) or 0.0


async def test_calls_cut_off_by_their_deadline_or_their_client_are_not_counted_as_ok() -> None:
    app = FakeApp()
    service = await start_service(app, ServiceSettings(port=0, metrics_port=0))
    method = f"/{SERVICE}/Info"
    before = {code: handled(method, code) for code in ("OK", "DEADLINE_EXCEEDED", "CANCELLED")}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as expired:
                await stub.Info(embedder_pb2.InfoRequest(), timeout=0.1)
            assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            await waiting.until(lambda: handled(method, "DEADLINE_EXCEEDED") == before["DEADLINE_EXCEEDED"] + 1)
            app.servicer.started.clear()
            abandoned = stub.Info(embedder_pb2.InfoRequest(), timeout=5)
            await asyncio.wait_for(app.servicer.started.wait(), 10)  # the server holds the call
            abandoned.cancel()
            await waiting.until(lambda: handled(method, "CANCELLED") == before["CANCELLED"] + 1, what="recorded")
        assert handled(method, "OK") == before["OK"]
    finally:
        app.servicer.release.set()
        await service.stop(0)


async def test_a_unary_call_without_a_deadline_gets_its_method_class_default() -> None:
    from meshsearch_common import context

    seen: dict[str, float | None] = {}

    class RecordsDeadline(embedder_pb2_grpc.EmbedderServiceServicer):
        async def Info(self, request, context_):
            seen["read"] = context.remaining_seconds()
            return embedder_pb2.InfoResponse()

        async def Embed(self, request, context_):
            seen["embed"] = context.remaining_seconds()
            return embedder_pb2.EmbedResponse()

    class App(FakeApp):
        def register(self, server: grpc.aio.Server) -> Sequence[str]:
            embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(RecordsDeadline(), server)
            return [SERVICE]

    settings = ServiceSettings(port=0, metrics_port=0, read_deadline_s=7, write_deadline_s=90)
    service = await start_service(App(), settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
            stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
            await stub.Info(embedder_pb2.InfoRequest())
            await stub.Embed(embedder_pb2.EmbedRequest(), timeout=3)
    finally:
        await service.stop(0)
    assert seen["read"] is not None and 6 < seen["read"] <= 7  # Info is marked NO_SIDE_EFFECTS
    assert seen["embed"] is not None and 2 < seen["embed"] <= 3.05  # the caller's own deadline wins
