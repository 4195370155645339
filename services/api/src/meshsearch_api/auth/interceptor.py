"""Runs the Gate before every public RPC, streaming ones included, and makes its principal the
call's (`principal.current()`). A stream is authorized when it opens and its key is checked again,
at most every RECHECK_S, as its messages flow: a key revoked or expired while an upload or a
watch is open stops it within the key cache's TTL plus RECHECK_S (UNAUTHENTICATED).

It sits inside the common server interceptor, which turns the gate's errors into statuses
with their details and keeps the rate-limit headers set here in the trailing metadata.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from meshsearch_api.auth import permissions, principal
from meshsearch_api.auth.gate import Gate, RateLimited
from meshsearch_api.auth.rate_limits import Decision
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


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, gate: Readiness[Gate]) -> None:
        self._gate = gate

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

    async def _authorize(
        self, method: str, servicer_context: grpc.aio.ServicerContext[Any, Any], cost: int = 1
    ) -> None:
        # The call runs in its own task, so the principal set here is this call's alone.
        try:
            authorized = await self._gate.get().authorize(method, _authorization(servicer_context), cost)
        except RateLimited as refused:
            servicer_context.set_trailing_metadata(_rate_headers(refused.decision, refused.kind))
            raise
        principal.set_current(authorized.principal)
        headers = _rate_headers(authorized.rate, authorized.rate_kind)
        if headers:
            servicer_context.set_trailing_metadata(headers)

    def _answered_once(
        self, behavior: Callable[..., Any], method: str, unary_request: bool
    ) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: Any, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if unary_request:
                await self._authorize(method, servicer_context, permissions.cost(method, request))
                return await behavior(request, servicer_context)
            await self._authorize(method, servicer_context)
            return await behavior(_rechecked(request, self._recheck(servicer_context)), servicer_context)

        return wrapped

    def _streamed(
        self, behavior: Callable[..., Any], method: str, unary_request: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: Any, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await self._authorize(method, servicer_context)
            recheck = self._recheck(servicer_context)
            requests = request if unary_request else _rechecked(request, recheck)
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
