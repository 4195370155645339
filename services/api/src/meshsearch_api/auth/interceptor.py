"""Authentication and rate limits of every public RPC, in two steps:

1. `admit` (an admission of the common server interceptor, see `meshsearch_common.server_interceptor`)
   runs on the call's metadata and peer alone, before its request is read: an address that
   failed authentication too often is refused at once; otherwise the key is checked and the
   method's role required, and the caller becomes the call's principal (`principal.current()`).
   A caller without a valid key makes the api read none of its request, however large.
2. The interceptor then spends the call's cost from its key's rate (the cost may depend on the
   request: a SearchBatch of 32 counts 32), bounds the streams a key holds open at once, and
   checks an open stream's key again, at most every RECHECK_S, as its messages flow: a key
   revoked or expired while an upload or a watch is open stops it within the key cache's TTL
   plus RECHECK_S (UNAUTHENTICATED).

It sits inside the common server interceptor, which turns the errors raised here into statuses
with their details and keeps the rate-limit headers set here in the trailing metadata.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc

from meshsearch_api.auth import permissions, principal
from meshsearch_api.auth.failures import FailureCounter, peer_host, refuse_locked_peer
from meshsearch_api.auth.gate import Gate, RateLimited
from meshsearch_api.auth.rate_limits import Decision
from meshsearch_common.errors import ResourceExhausted, Unauthenticated
from meshsearch_common.readiness import Readiness
from meshsearch_common.server_interceptor import rebuild_handler

AUTHORIZATION = "authorization"
RECHECK_S = 1.0  # how often an open stream's key is checked again (cached: cheap)


def _authorization(servicer_context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in servicer_context.invocation_metadata() or ():
        if key == AUTHORIZATION:
            return value if isinstance(value, str) else None
    return None


def _rate_headers(rate: Decision | None, kind: str) -> tuple[tuple[str, str], ...]:
    if rate is None:
        return ()
    return (
        ("x-ratelimit-limit", f"{rate.limit_per_s:g}"),
        ("x-ratelimit-remaining", str(rate.remaining)),
        ("x-ratelimit-class", kind),
    )


class OpenStreams:
    """Streams each key holds open on this replica, at most `max_per_key` at once."""

    def __init__(self, max_per_key: int) -> None:
        self._max = max_per_key
        self._open: Tally[str] = Tally()

    @contextmanager
    def held(self, key_id: str) -> Iterator[None]:
        if not key_id:  # auth off: one local user
            yield
            return
        if self._open[key_id] >= self._max:
            raise ResourceExhausted(
                f"this key already holds {self._max} open streams (uploads, estimates, watches) on this "
                "server; end one first",
                1.0,
                reason="TOO_MANY_STREAMS",
                quota_subject=f"key:{key_id}:streams",
            )
        self._open[key_id] += 1
        try:
            yield
        finally:
            self._open[key_id] -= 1
            if not self._open[key_id]:
                del self._open[key_id]


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, gate: Readiness[Gate], streams: OpenStreams, peer_failures: FailureCounter) -> None:
        self._gate = gate
        self._streams = streams
        self._peer_failures = peer_failures

    async def admit(self, method: str, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> None:
        """Step 1 (see the module docstring). The call runs in its own task, so the principal
        set here is this call's alone."""
        if permissions.is_open(method):
            return
        host = peer_host(servicer_context.peer() or "")
        refuse_locked_peer(self._peer_failures, host)
        try:
            caller = await self._gate.get().admit(method, _authorization(servicer_context))
        except Unauthenticated:
            self._peer_failures.record(host)
            raise
        principal.set_current(caller)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or permissions.is_open(method):
            return handler
        return rebuild_handler(
            handler,
            lambda behavior, unary: self._answered_once(behavior, method, unary),
            lambda behavior, unary: self._streamed(behavior, method, unary),
        )

    async def _spend(self, method: str, servicer_context: grpc.aio.ServicerContext[Any, Any], cost: int = 1) -> None:
        try:
            authorized = await self._gate.get().spend(principal.current(), method, cost)
        except RateLimited as refused:
            servicer_context.set_trailing_metadata(_rate_headers(refused.decision, refused.kind))
            raise
        headers = _rate_headers(authorized.rate, authorized.rate_kind)
        if headers:
            servicer_context.set_trailing_metadata(headers)

    def _answered_once(
        self, behavior: Callable[..., Any], method: str, unary_request: bool
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: Any, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if unary_request:
                await self._spend(method, servicer_context, permissions.cost(method, request))
                return await behavior(request, servicer_context)
            await self._spend(method, servicer_context)
            with self._streams.held(principal.current().key_id):
                return await behavior(_rechecked(request, self._recheck(servicer_context)), servicer_context)

        return wrapped

    def _streamed(
        self, behavior: Callable[..., Any], method: str, unary_request: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: Any, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await self._spend(method, servicer_context)
            recheck = self._recheck(servicer_context)
            requests = request if unary_request else _rechecked(request, recheck)
            with self._streams.held(principal.current().key_id):
                async for response in behavior(requests, servicer_context):
                    await recheck()
                    yield response

        return wrapped

    def _recheck(self, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> Callable[[], Awaitable[None]]:
        """An open stream's check of its key, at most every RECHECK_S: it raises once the key
        has been revoked or has expired."""
        gate, authorization = self._gate.get(), _authorization(servicer_context)
        checked_at = time.monotonic()

        async def recheck() -> None:
            nonlocal checked_at
            if time.monotonic() - checked_at >= RECHECK_S:
                checked_at = time.monotonic()
                await gate.revalidate(authorization)

        return recheck


async def _rechecked(requests: AsyncIterator[Any], recheck: Callable[[], Awaitable[None]]) -> AsyncIterator[Any]:
    """The stream's messages, its key checked again before each is handed on."""
    async for message in requests:
        await recheck()
        yield message
