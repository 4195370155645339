"""Server interceptor applied to every RPC of every service.

For each call it: adopts the caller's request id (or makes one) and deadline into the
per-request context; maps domain errors (MeshError) to their status code through one table;
turns any other escaping exception into INTERNAL with a logged traceback (never UNKNOWN);
and records Prometheus metrics by method and status code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from meshsearch_common import context
from meshsearch_common.errors import STATUS_DETAILS_KEY, MeshError, status_details

log = logging.getLogger(__name__)

RPC_HANDLED = Counter("meshsearch_rpc_handled_total", "RPCs completed, by method and status code.", ["method", "code"])
RPC_LATENCY = Histogram(
    "meshsearch_rpc_duration_seconds",
    "Server-side RPC latency by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _adopt_request_context(servicer_context: grpc.aio.ServicerContext) -> None:
    metadata = dict(servicer_context.invocation_metadata() or ())
    context.request_id.set(metadata.get(context.REQUEST_ID_METADATA_KEY) or context.new_request_id())
    remaining = servicer_context.time_remaining()
    context.deadline.set(None if remaining is None else time.monotonic() + remaining)


async def _abort_with(servicer_context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    if isinstance(exc, MeshError):
        details = status_details(exc)
        if details is not None:
            await servicer_context.abort(
                exc.code, exc.message, trailing_metadata=((STATUS_DETAILS_KEY, details.SerializeToString()),)
            )
        await servicer_context.abort(exc.code, exc.message)
    log.exception("unhandled error in %s", method)
    await servicer_context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see server logs")


def _final_code(servicer_context: grpc.aio.ServicerContext) -> str:
    code = servicer_context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name


def _record(method: str, servicer_context: grpc.aio.ServicerContext, started: float) -> None:
    """Metrics and one access-log line per RPC (the request id is added by the log formatter)."""
    elapsed = time.perf_counter() - started
    code = _final_code(servicer_context)
    RPC_LATENCY.labels(method).observe(elapsed)
    RPC_HANDLED.labels(method, code).inc()
    log.info("rpc", extra={"method": method, "code": code, "duration_ms": round(elapsed * 1000, 2)})


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler; see the module docstring."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(handler.stream_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(handler.stream_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _wrap_unary(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Awaitable[Any]]:
        async def wrapped(request: Any, servicer_context: grpc.aio.ServicerContext) -> Any:
            _adopt_request_context(servicer_context)
            started = time.perf_counter()
            try:
                return await behavior(request, servicer_context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never UNKNOWN
                await _abort_with(servicer_context, exc, method)
            finally:
                _record(method, servicer_context, started)

        return wrapped

    @staticmethod
    def _wrap_stream(behavior: Callable[..., AsyncIterator[Any]], method: str) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(request: Any, servicer_context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            _adopt_request_context(servicer_context)
            started = time.perf_counter()
            try:
                async for response in behavior(request, servicer_context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never UNKNOWN
                await _abort_with(servicer_context, exc, method)
            finally:
                _record(method, servicer_context, started)

        return wrapped
