"""Tracing through the common server bootstrap and client layer, with an in-memory exporter:
one trace from the caller through a front service to its upstream, W3C traceparent in the
metadata, probes untraced, and nothing installed when tracing is off."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from meshsearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from meshsearch_common import tracing
from meshsearch_common.client import Upstream, connect_upstream
from meshsearch_common.server import RunningService, start_service
from meshsearch_common.settings import ServiceSettings, UpstreamPolicy
from meshsearch_common.tracing import TracingSettings

EMBEDDER = embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"]


class Back(embedder_pb2_grpc.EmbedderServiceServicer):
    """The upstream: records the traceparent it received."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []

    async def Info(self, request, context):
        self.traceparents += [v for k, v in context.invocation_metadata() if k == "traceparent"]
        return embedder_pb2.InfoResponse(model_id="back")


class Front(embedder_pb2_grpc.EmbedderServiceServicer):
    """The caller's service: answers Info by asking the upstream through the client layer."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.trace_ids: list[str | None] = []

    async def Info(self, request, context):
        self.trace_ids.append(tracing.current_trace_id())  # what its log lines carry
        stub = embedder_pb2_grpc.EmbedderServiceStub(self.upstream.channel)
        answer = await self.upstream.call(stub.Info, embedder_pb2.InfoRequest())
        return embedder_pb2.InfoResponse(model_id=f"front+{answer.model_id}")


class App:
    settings = ServiceSettings(port=0, metrics_port=0)

    def __init__(self, name: str, servicer: embedder_pb2_grpc.EmbedderServiceServicer) -> None:
        self.name, self.servicer = name, servicer

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        embedder_pb2_grpc.add_EmbedderServiceServicer_to_server(self.servicer, server)
        return [EMBEDDER.full_name]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    assert tracing.configure("test", TracingSettings(), exporter=spans)
    yield spans
    tracing.shutdown()


@pytest.fixture
async def mesh(exporter: InMemorySpanExporter) -> AsyncIterator[tuple[RunningService, Front, Back]]:
    back = Back()
    back_service = await start_service(App("back", back), App.settings)
    upstream = connect_upstream("back", f"127.0.0.1:{back_service.port}", [EMBEDDER], UpstreamPolicy())
    front = Front(upstream)
    front_service = await start_service(App("front", front), App.settings)
    yield front_service, front, back
    await front_service.stop(0)
    await upstream.close()
    await back_service.stop(0)


async def test_one_trace_follows_a_call_through_the_mesh(
    mesh: tuple[RunningService, Front, Back], exporter: InMemorySpanExporter
) -> None:
    service, front, back = mesh
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as channel:
        assert (await embedder_pb2_grpc.EmbedderServiceStub(channel).Info(embedder_pb2.InfoRequest())).model_id == (
            "front+back"
        )
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = [s for s in spans if s.kind == SpanKind.CLIENT]
    assert len(servers) == 2 and len(clients) == 1, [(s.name, s.kind) for s in spans]  # the health check: no span
    assert len({s.context.trace_id for s in spans}) == 1
    front_span = next(s for s in servers if s.parent is None)
    back_span = next(s for s in servers if s.parent is not None)
    assert clients[0].parent is not None and back_span.parent is not None
    assert clients[0].parent.span_id == front_span.context.span_id
    assert back_span.parent.span_id == clients[0].context.span_id
    assert front_span.name == "/meshsearch.embedder.v1.EmbedderService/Info"
    version, trace_id, parent_id, _flags = back.traceparents[0].split("-")  # W3C trace context
    assert version == "00" and int(trace_id, 16) == front_span.context.trace_id
    assert int(parent_id, 16) == clients[0].context.span_id
    assert front.trace_ids == [format(front_span.context.trace_id, "032x")]


def test_tracing_off_installs_nothing() -> None:
    assert tracing.configure("test", TracingSettings(enabled=False)) is False
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
    assert tracing.current_trace_id() is None
