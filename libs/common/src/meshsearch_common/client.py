"""The one client layer for every service-to-service call.

`connect_upstream()` returns a channel whose every call gets, in order:
- request id metadata, so one id follows a request across services;
- a deadline budget (`meshsearch_common.deadlines`): the inbound caller's remaining time less a
  small reserve, or the policy's timeout outside any inbound call; a call with no time left
  fails with DEADLINE_EXCEEDED without being sent;
- the upstream's circuit breaker: an open breaker answers UNAVAILABLE at once, naming the
  upstream. Failures are what an unhealthy upstream produces: UNAVAILABLE, INTERNAL, UNKNOWN,
  and timeouts (a hung upstream opens the breaker). Caller errors (INVALID_ARGUMENT,
  NOT_FOUND, ...), RESOURCE_EXHAUSTED (a healthy upstream refusing work it cannot finish in
  time) and our own caller's cancellation never count;
- retries through gRPC's service config, for methods the contract marks idempotent
  (`option idempotency_level`) and retryable codes only: exponential backoff with gRPC's
  built-in jitter, and retry throttling so a sick upstream is not stormed.
The channel balances `round_robin` over every address a DNS name resolves to, so replicas
behind one name (a headless Kubernetes Service) share the load evenly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
import pybreaker
from google.protobuf.descriptor import ServiceDescriptor
from prometheus_client import Counter, Gauge

from meshsearch_common import context, deadlines, keepalive, tls, tracing
from meshsearch_common.breaker import CLOSED, HALF_OPEN, OPEN, AsyncCircuitBreaker, BreakerOpen
from meshsearch_common.callers import CALLER_TOKEN_METADATA_KEY
from meshsearch_common.contracts import idempotent_methods
from meshsearch_common.errors import (
    CALLER_ERROR_CODES,
    STATUS_DETAILS_KEY,
    Unavailable,
    from_upstream,
    status_details,
)
from meshsearch_common.limits import GRPC_MAX_MESSAGE_BYTES
from meshsearch_common.settings import UpstreamPolicy
from meshsearch_common.tls import ClientTls

log = logging.getLogger(__name__)

ResponseT = TypeVar("ResponseT")

RETRYABLE_CODES = ("UNAVAILABLE",)

UPSTREAM_CALLS = Counter(
    "meshsearch_upstream_calls_total", "Calls to upstream services by outcome.", ["upstream", "code"]
)
BREAKER_STATE = Gauge(
    "meshsearch_upstream_breaker_state",
    "Circuit breaker state per upstream: 0 closed, 1 half-open, 2 open.",
    ["upstream"],
)
_STATE_VALUE = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


# A healthy upstream refusing work it cannot finish in time (with a RetryInfo): not a failure.
HEALTHY_REFUSAL_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED})


def is_upstream_failure(exc: BaseException) -> bool:
    """Whether an exception from a call shows the upstream is unhealthy."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc.code() not in CALLER_ERROR_CODES | HEALTHY_REFUSAL_CODES
    return not isinstance(exc, asyncio.CancelledError)


def service_config(services: Sequence[ServiceDescriptor], policy: UpstreamPolicy) -> str:
    """gRPC service config JSON: round-robin balancing, retries for idempotent methods."""
    names = [
        {"service": service.full_name, "method": method}
        for service in services
        for method in idempotent_methods(service)
    ]
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if names and policy.retry_max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": policy.retry_max_attempts,
                    "initialBackoff": f"{policy.retry_initial_backoff_s}s",
                    "maxBackoff": f"{policy.retry_max_backoff_s}s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": list(RETRYABLE_CODES),
                },
            }
        ]
        config["retryThrottling"] = {"maxTokens": 10, "tokenRatio": 0.1}
    return json.dumps(config)


class _BreakerStateListener(pybreaker.CircuitBreakerListener):
    """Exports breaker transitions as a gauge and a log line."""

    def __init__(self, upstream: str) -> None:
        self._upstream = upstream
        BREAKER_STATE.labels(upstream).set(0)

    def state_change(self, _cb: object, old: Any, new: Any) -> None:
        BREAKER_STATE.labels(self._upstream).set(_STATE_VALUE.get(new.name, 0))
        log.warning(
            "upstream breaker state changed",
            extra={"upstream": self._upstream, "from": getattr(old, "name", None), "to": new.name},
        )


def _call_details(
    details: grpc.aio.ClientCallDetails, timeout_s: float, caller_token: str = ""
) -> grpc.aio.ClientCallDetails:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    request_id = context.request_id.get()
    if request_id and not metadata.get_all(context.REQUEST_ID_METADATA_KEY):
        metadata.add(context.REQUEST_ID_METADATA_KEY, request_id)
    if caller_token:
        metadata.add(CALLER_TOKEN_METADATA_KEY, caller_token)
    return grpc.aio.ClientCallDetails(
        method=details.method,
        timeout=timeout_s,
        metadata=metadata,
        credentials=details.credentials,
        wait_for_ready=details.wait_for_ready,
    )


class UpstreamGuard:
    """Deadline, request id and breaker for one upstream; shared by its interceptors."""

    def __init__(self, name: str, policy: UpstreamPolicy, caller_token: str = "") -> None:
        self.name = name
        self.policy = policy
        self.caller_token = caller_token
        self.breaker = AsyncCircuitBreaker(
            name,
            fail_max=policy.breaker_fail_max,
            reset_timeout_s=policy.breaker_reset_timeout_s,
            is_failure=is_upstream_failure,
            listeners=[_BreakerStateListener(name)],
        )

    def timeout_for(self, requested: float | None) -> float:
        """The deadline to send (see `deadlines.upstream_timeout`); raises DEADLINE_EXCEEDED,
        without sending anything, when the caller's time is used up."""
        timeout = deadlines.upstream_timeout(self.policy, requested)
        if timeout is None:
            UPSTREAM_CALLS.labels(self.name, "NOT_SENT_DEADLINE").inc()
            raise _rpc_error(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no time left for a call to {self.name}: the caller's deadline has (nearly) passed",
            )
        return timeout

    def failure_judge(self, timeout_s: float) -> Callable[[BaseException], bool]:
        """`is_upstream_failure` for one call sent with `timeout_s`: its timeout counts against
        the breaker only if the upstream had at least `breaker_min_budget_s` to answer."""
        fair_budget = timeout_s >= self.policy.breaker_min_budget_s

        def is_failure(exc: BaseException) -> bool:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return fair_budget
            return is_upstream_failure(exc)

        return is_failure

    def open_error(self, exc: BreakerOpen) -> grpc.aio.AioRpcError:
        """The UNAVAILABLE a call gets instead of being sent, with the time until the breaker's
        next trial as its RetryInfo."""
        UPSTREAM_CALLS.labels(self.name, "BREAKER_OPEN").inc()
        status = status_details(Unavailable(str(exc), retry_after_s=exc.retry_after_s, reason="CIRCUIT_OPEN"))
        return _rpc_error(grpc.StatusCode.UNAVAILABLE, str(exc), ((STATUS_DETAILS_KEY, status.SerializeToString()),))


def _rpc_error(
    code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, bytes], ...] = ()
) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code=code,
        initial_metadata=grpc.aio.Metadata(),
        trailing_metadata=grpc.aio.Metadata(*trailing),
        details=details,
    )


class _UnaryUnaryGuard(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, guard: UpstreamGuard) -> None:
        self._guard = guard

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        guard = self._guard
        timeout = guard.timeout_for(client_call_details.timeout)
        details = _call_details(client_call_details, timeout, guard.caller_token)

        async def attempt() -> Any:
            call = await continuation(details, request)
            return await call

        try:
            response = await guard.breaker.call(attempt, guard.failure_judge(timeout))
        except BreakerOpen as exc:
            raise guard.open_error(exc) from None
        except grpc.aio.AioRpcError as exc:
            UPSTREAM_CALLS.labels(guard.name, exc.code().name).inc()
            raise
        except asyncio.CancelledError:
            UPSTREAM_CALLS.labels(guard.name, "CANCELLED").inc()
            raise
        UPSTREAM_CALLS.labels(guard.name, "OK").inc()
        return response


class _StreamStreamGuard(grpc.aio.StreamStreamClientInterceptor):
    """Streams get the deadline, request id and fail-fast admission; their long-running
    outcome is not fed back to the breaker (a stream is not one call)."""

    def __init__(self, guard: UpstreamGuard) -> None:
        self._guard = guard

    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        guard = self._guard
        retry_after = guard.breaker.rejecting_for_s()  # a stream never takes the half-open trial
        if retry_after is not None:
            raise guard.open_error(BreakerOpen(guard.name, retry_after))
        details = _call_details(client_call_details, guard.timeout_for(client_call_details.timeout), guard.caller_token)
        return await continuation(details, request_iterator)


class Upstream:
    """A channel to one upstream service plus the guard that protects calls on it."""

    def __init__(self, name: str, channel: grpc.aio.Channel, guard: UpstreamGuard) -> None:
        self.name = name
        self.channel = channel
        self.guard = guard

    def fail_fast_if_open(self) -> None:
        """UNAVAILABLE at once while this upstream's breaker rejects calls: called before a step
        that would be wasted (embedding a query the search service cannot take)."""
        retry_after = self.guard.breaker.rejecting_for_s(claim=True)
        if retry_after is not None:
            raise from_upstream(self.name, self.guard.open_error(BreakerOpen(self.name, retry_after)))

    async def call(self, rpc: Callable[[Any], Awaitable[ResponseT]], request: Any) -> ResponseT:
        """Invoke a unary method of a stub built on `self.channel`; failures become domain
        errors (see errors.from_upstream), so handlers never leak raw upstream statuses."""
        try:
            return await rpc(request)
        except grpc.aio.AioRpcError as exc:
            if is_upstream_failure(exc):  # its words may not reach our caller (from_upstream): keep them here
                log.warning(
                    "upstream call failed",
                    extra={"upstream": self.name, "code": exc.code().name, "error": exc.details()},
                )
            raise from_upstream(self.name, exc) from None

    async def close(self) -> None:
        await self.channel.close()


def connect_upstream(
    name: str,
    target: str,
    services: Sequence[ServiceDescriptor],
    policy: UpstreamPolicy,
    max_message_bytes: int = GRPC_MAX_MESSAGE_BYTES,
    client_tls: ClientTls | None = None,
    caller_token: str = "",
) -> Upstream:
    """Open the channel every call from this process to upstream `name` must use.

    `target` is any gRPC target ("host:port", "dns:///name:port"); `services` are the
    descriptors of the services called on it, whose idempotency options drive retries;
    `client_tls` makes the channel TLS (mutual with a client certificate); `caller_token`, when
    set, goes with every call (see `meshsearch_common.callers`).
    """
    guard = UpstreamGuard(name, policy, caller_token)
    client_tls = client_tls or ClientTls()
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config(services, policy)),
        ("grpc.enable_retries", 1),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        *keepalive.client_options(),  # a silent link is dropped in seconds, not at each deadline
        # Reconnect quickly after an upstream restarts, so the half-open trial can succeed.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        *tls.channel_options(client_tls),
    ]
    # Tracing (when on) outermost: a client span covers the breaker and the deadline budget too.
    interceptors = [*tracing.client_interceptors(), _UnaryUnaryGuard(guard), _StreamStreamGuard(guard)]
    if client_tls.enabled:
        credentials = tls.channel_credentials(client_tls)
        channel = grpc.aio.secure_channel(target, credentials, options=options, interceptors=interceptors)
    else:
        channel = grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
    return Upstream(name, channel, guard)
