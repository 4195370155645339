"""Tracing across the real mesh: api, embedder and search service as separate processes, each
exporting over OTLP/gRPC to a collector this test runs. One search through the api makes one
trace, whose spans come from all three services and chain server -> client -> server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from meshsearch.client import AsyncClient, Connection
from meshsearch_cli.stack import EmbeddedStack, Ports, service_env_name
from tests import waiting

SERVICES = ("embedder", "search", "api")


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver keeping (service name, span) pairs."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []
        self.lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802
        with self.lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.spans += [(attributes.get("service.name", ""), span) for span in scope.spans]
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: bytes) -> list[tuple[str, trace_pb2.Span]]:
        with self.lock:
            return [(service, span) for service, span in self.spans if span.trace_id == trace_id]


@pytest.fixture(scope="module")
def traced(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedStack, Collector]]:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    env = {}
    for service in SERVICES:
        prefix = service_env_name(service, "tracing")  # a nested setting: PREFIX_TRACING__FIELD
        env[f"{prefix}__ENABLED"] = "true"
        env[f"{prefix}__OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    mesh = EmbeddedStack(
        tmp_path_factory.mktemp("traced"),
        Ports.ephemeral(),
        database_url=stack.database_url,
        databases=stack.databases,
        extra_env=env,
    )
    mesh.redis_url = ""  # no embedding cache: every query reaches the embedder
    try:
        for service in SERVICES:
            mesh.start_service(service)
        for service in SERVICES:
            mesh.wait_service(service)
        yield mesh, collector
    finally:
        mesh.stop()
        server.stop(grace=None)


def _wait_for(
    collector: Collector, trace_id: bytes, services: set[str], timeout_s: float = 30
) -> list[tuple[str, trace_pb2.Span]]:
    """The spans of `trace_id` once every one of `services` has exported some (exports are batched)."""
    waiting.until_sync(
        lambda: {service for service, _ in collector.trace(trace_id)} >= services,
        timeout_s=timeout_s,
        what=f"spans of {services} arrive",
    )
    return collector.trace(trace_id)


async def test_a_search_is_one_trace_across_the_three_services(traced: tuple[EmbeddedStack, Collector]) -> None:
    mesh, collector = traced
    name = f"traced_{uuid.uuid4().hex[:8]}"
    async with AsyncClient(Connection(f"127.0.0.1:{mesh.ports.api}")) as api:
        await api.create_collection(name)
        await api.index(name, {"a": "Bees pollinate flowering plants.", "b": "Rust prevents data races."})
        answer = await api.query(name, "which insects carry pollen?", top_k=1)
        assert answer.hits[0].document.id == "a"
    search_span = None
    deadline = time.monotonic() + 30
    while search_span is None and time.monotonic() < deadline:
        with collector.lock:
            search_span = next(
                (
                    span
                    for service, span in collector.spans
                    if service == "meshsearch-api"
                    and span.name == "/meshsearch.api.v1.SearchService/Search"
                    and span.kind == trace_pb2.Span.SPAN_KIND_SERVER
                ),
                None,
            )
        time.sleep(0.2)
    assert search_span is not None, "the api exported no span for Search"
    spans = _wait_for(collector, search_span.trace_id, {"meshsearch-api", "meshsearch-embedder", "meshsearch-search"})
    by_id = {span.span_id: (service, span) for service, span in spans}
    embedder_server = next(
        s for svc, s in spans if svc == "meshsearch-embedder" and s.kind == trace_pb2.Span.SPAN_KIND_SERVER
    )
    search_server = next(
        s for svc, s in spans if svc == "meshsearch-search" and s.kind == trace_pb2.Span.SPAN_KIND_SERVER
    )
    for server_span, upstream in ((embedder_server, "embedder"), (search_server, "search")):
        caller_service, caller = by_id[server_span.parent_span_id]  # the api's client span ...
        assert caller_service == "meshsearch-api" and caller.kind == trace_pb2.Span.SPAN_KIND_CLIENT, upstream
        assert caller.parent_span_id == search_span.span_id  # ... inside the api's server span
    assert not any("grpc.health" in span.name for _, span in collector.spans)  # probes are not traced
