"""Optional OpenTelemetry tracing across the mesh, off by default.

When a service's `TRACING__ENABLED` is true, `configure()` gives the process a tracer provider
that exports spans over OTLP/gRPC to `TRACING__OTLP_ENDPOINT` (an OpenTelemetry Collector,
Jaeger, Tempo, ...). Then every RPC a server handles gets a server span, and every call through
the common client layer gets a client span. The W3C `traceparent` travels in gRPC metadata, so
one trace follows a request from the api through the embedder and the search service.
Sampling follows the caller's decision (parent-based), and otherwise `TRACING__SAMPLE_RATIO`.

Off, nothing is installed: no interceptor runs and no span is made. Health checks and
reflection are never traced: probes would drown the traces that matter.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from pydantic import BaseModel, Field

log = logging.getLogger(__name__)

UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.")


class TracingSettings(BaseModel, frozen=True):
    enabled: bool = Field(False, description="Export OpenTelemetry traces of every RPC over OTLP/gRPC.")
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4317", description="OTLP/gRPC endpoint of the collector; https:// for TLS."
    )
    sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of new traces recorded (a caller's sampling decision is followed)."
    )


_provider: Any = None  # opentelemetry.sdk.trace.TracerProvider, once configured


def configure(service: str, settings: TracingSettings, exporter: Any = None) -> bool:
    """Install tracing for this process if `settings.enabled` (or an `exporter` is given, as
    tests do with an in-memory one). Returns whether tracing is on. Call once, before the
    server and the upstream channels are made."""
    global _provider
    if not settings.enabled and exporter is None:
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": f"meshsearch-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        secure = settings.otlp_endpoint.startswith("https://")
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(settings.otlp_endpoint, insecure=not secure)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    log.info("tracing on", extra={"otlp_endpoint": settings.otlp_endpoint, "sample_ratio": settings.sample_ratio})
    return True


def _traced(details: Any) -> bool:
    method = getattr(details, "method", "")
    method = method.decode() if isinstance(method, bytes) else method
    return not any(method.startswith(f"/{service}") for service in UNTRACED_SERVICES)


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The server span interceptor, outermost; none when tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=_provider, filter_=_traced)]  # type: ignore[no-untyped-call]


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Client span interceptors (one per kind of call) that also send `traceparent`; none when
    tracing is off."""
    if _provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors(tracer_provider=_provider)  # type: ignore[no-untyped-call]
    return interceptors


def current_trace_id() -> str | None:
    """The active span's trace id (32 hex characters), for log lines; None when untraced."""
    if _provider is None:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def shutdown() -> None:
    """Export what is buffered (called after the server drained)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None
