"""The server bootstrap every service runs under.

Lifecycle, in order:
1. bind the gRPC port with health (NOT_SERVING), reflection and the common interceptor, and
   start the Prometheus endpoint, so orchestrators can probe the process while it warms up;
2. `app.start()`: open pools, load models, run warmups;
3. mark every service SERVING and wait for SIGTERM or SIGINT;
4. mark NOT_SERVING (load balancers stop sending), `server.stop(grace)` lets in-flight RPCs
   finish within the grace period, then `app.stop()` closes pools and channels.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from meshsearch_common import keepalive, tls, tracing
from meshsearch_common.callers import caller_admission
from meshsearch_common.limits import GRPC_MAX_MESSAGE_BYTES, RequestLimits
from meshsearch_common.logs import configure_logging
from meshsearch_common.read_budget import ReadBudget
from meshsearch_common.reflection import enable_reflection
from meshsearch_common.server_interceptor import ServerInterceptor
from meshsearch_common.settings import ServiceSettings

log = logging.getLogger(__name__)


class ServiceApp(Protocol):
    """What a service provides to the bootstrap. An app may also have `interceptors()`,
    returning server interceptors to run inside the common one (the api's rate limits),
    `admissions()`, checks of each caller run before its request is read (the api's keys), and
    `request_limits()`, its RequestLimits (otherwise every message may have the default size)."""

    name: str

    @property
    def settings(self) -> ServiceSettings:
        """The service's settings (a ServiceSettings subclass)."""

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add servicers to `server`; return their full service names."""

    async def start(self) -> None:
        """Become ready: connect, load, warm up. Runs while health says NOT_SERVING."""

    async def stop(self) -> None:
        """Release resources after the server has drained."""


@dataclass
class RunningService:
    """A started service: its bound ports and the handles needed to stop it."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    app: ServiceApp
    port: int
    metrics_port: int
    service_names: Sequence[str]

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)
        await self.app.stop()


def connection_age_options(max_age_s: float) -> list[tuple[str, int]]:
    """Bound a connection's life (with ±10% jitter from gRPC), so that clients balancing over
    DNS re-resolve and reach replicas added since they connected; calls in flight get an hour
    to finish on the old connection."""
    if max_age_s <= 0:
        return []
    return [("grpc.max_connection_age_ms", int(max_age_s * 1000)), ("grpc.max_connection_age_grace_ms", 3_600_000)]


async def start_service(app: ServiceApp, settings: ServiceSettings) -> RunningService:
    """Start `app` and return once it reports SERVING."""
    own_interceptors = getattr(app, "interceptors", lambda: ())()
    limits: RequestLimits = getattr(app, "request_limits", RequestLimits)()
    server = grpc.aio.server(
        interceptors=[
            *tracing.server_interceptors(),  # outermost, so a server span covers everything below
            ServerInterceptor(
                settings.read_deadline_s,
                settings.write_deadline_s,
                limits,
                [
                    *([caller_admission(app.name, settings.callers)] if settings.callers.enabled else []),
                    *getattr(app, "admissions", tuple)(),
                ],
                ReadBudget(settings.max_request_bytes_in_flight),
                settings.stream_idle_timeout_s,
            ),
            *own_interceptors,
        ],
        # Past this many calls at once gRPC answers RESOURCE_EXHAUSTED at once, reading nothing.
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        options=[
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", min(limits.largest, GRPC_MAX_MESSAGE_BYTES)),
            ("grpc.so_reuseport", 0),
            *connection_age_options(settings.max_connection_age_s),
            *keepalive.server_options(),
        ],
    )
    service_names = list(app.register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    enable_reflection(server, [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])
    address = f"{settings.host}:{settings.port}"
    if settings.tls.enabled:
        port = server.add_secure_port(address, tls.server_credentials(settings.tls))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind {app.name} to {settings.host}:{settings.port}")
    metrics_server, _ = start_http_server(settings.metrics_port, addr=settings.host)
    metrics_port = metrics_server.server_port
    await server.start()
    log.info(
        "listening",
        extra={
            "port": port,
            "metrics_port": metrics_port,
            "state": "NOT_SERVING",
            "tls": "mutual" if settings.tls.client_ca_file else "on" if settings.tls.enabled else "off",
            "callers": "checked" if settings.callers.enabled else "anyone",
        },
    )
    await app.start()
    for name in ("", *service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"port": port, "services": service_names})
    return RunningService(server, health_servicer, app, port, metrics_port, service_names)


async def serve(app: ServiceApp, settings: ServiceSettings) -> None:
    """Run `app` until SIGTERM or SIGINT, then drain and stop."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    startup = asyncio.create_task(start_service(app, settings))
    stop_wait = asyncio.create_task(stop_requested.wait())
    done, _ = await asyncio.wait({startup, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if startup not in done:
        startup.cancel()
        log.info("stopped before becoming ready")
        return
    running = startup.result()
    await stop_wait
    log.info("draining", extra={"grace_s": settings.shutdown_grace_s})
    await running.stop(settings.shutdown_grace_s)
    tracing.shutdown()
    log.info("stopped")


def run(app: ServiceApp) -> None:
    """Run `app` in this process until SIGTERM or SIGINT, logging as JSON lines: what each
    service's `python -m meshsearch_<service>` (and so its image) does."""
    configure_logging(app.name, app.settings.log_level)
    tracing.configure(app.name, app.settings.tracing)
    asyncio.run(serve(app, app.settings))
