"""Blocking-channel interceptor applying a `CallPolicy` (the sync twin of `aio_interceptors`;
the policy and the retry decision are shared, only the calling convention differs)."""

from __future__ import annotations

import time
from typing import Any, NamedTuple

import grpc

from meshsearch.client.policy import CallPolicy, time_left


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _Details(_CallDetails, grpc.ClientCallDetails):
    """grpc.ClientCallDetails is an interface with no constructor; this fills it in."""


class PolicyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, policy: CallPolicy) -> None:
        self._policy = policy

    def _details(self, details: Any, timeout: float | None, metadata: Any = None) -> _Details:
        return _Details(
            details.method,
            timeout,
            metadata if metadata is not None else self._policy.metadata(details.metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        policy = self._policy
        deadline = policy.deadline(client_call_details.timeout)
        metadata = policy.metadata(client_call_details.metadata)
        attempts = 0
        while True:
            attempts += 1
            outcome = continuation(self._details(client_call_details, time_left(deadline), metadata), request)
            error = outcome.exception()
            if error is None or not isinstance(error, grpc.Call):
                return outcome
            delay = policy.retry_delay(client_call_details.method, error, attempts, deadline)
            if delay is None:
                return outcome
            time.sleep(delay)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details, client_call_details.timeout), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details, client_call_details.timeout), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(client_call_details, client_call_details.timeout), request_iterator)
