"""grpc.aio interceptors applying a `CallPolicy`. One class per kind of call: grpc.aio files an
interceptor under the first kind it implements, so one class for all four would only ever see
unary calls (and streams would go out without the key)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from meshsearch.client.policy import CallPolicy, time_left


class _WithPolicy:
    def __init__(self, policy: CallPolicy) -> None:
        self._policy = policy

    def _details(self, details: grpc.aio.ClientCallDetails, timeout: float | None) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            timeout,
            grpc.aio.Metadata(*self._policy.metadata(details.metadata)),
            details.credentials,
            details.wait_for_ready,
        )


class UnaryUnary(_WithPolicy, grpc.aio.UnaryUnaryClientInterceptor):
    """Key, request id, default deadline, and retries within that deadline."""

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        policy = self._policy
        deadline = policy.deadline(client_call_details.timeout)
        details = self._details(client_call_details, time_left(deadline))
        attempts = 0
        while True:
            attempts += 1
            call = await continuation(
                grpc.aio.ClientCallDetails(
                    details.method, time_left(deadline), details.metadata, details.credentials, details.wait_for_ready
                ),
                request,
            )
            try:
                await call
            except grpc.aio.AioRpcError as error:
                delay = policy.retry_delay(details.method, error, attempts, deadline)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            return call


class UnaryStream(_WithPolicy, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details, client_call_details.timeout), request)


class StreamUnary(_WithPolicy, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details, client_call_details.timeout), request_iterator)


class StreamStream(_WithPolicy, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details, client_call_details.timeout), request_iterator)


def interceptors(policy: CallPolicy) -> list[grpc.aio.ClientInterceptor]:
    return [UnaryUnary(policy), UnaryStream(policy), StreamUnary(policy), StreamStream(policy)]
