"""Server interceptor applied to every RPC of every service.

For each call it: adopts the caller's request id (or makes one) and deadline into the
per-request context (a unary call sent without a deadline gets its method class's default,
see `meshsearch_common.deadlines`); runs the service's admissions (who may call) before the
request's body is read; refuses any request message over its method's size limit before
parsing it (`meshsearch_common.limits`); maps domain errors (MeshError) to their status code through
one table; turns any other escaping exception into INTERNAL with a logged traceback (never
UNKNOWN); and records Prometheus metrics and one access-log line by method and status code.

A call that its client cancelled, or whose deadline passed, is recorded as CANCELLED or
DEADLINE_EXCEEDED with its real duration: gRPC cancels the handler then, and leaves the
context's code unset, which would otherwise read as OK.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from meshsearch_common import context, deadlines
from meshsearch_common.errors import STATUS_DETAILS_KEY, DeadlineExceeded, InvalidArgument, MeshError, status_details
from meshsearch_common.limits import Oversized, RequestLimits, bounded_deserializer
from meshsearch_common.read_budget import ReadBudget

log = logging.getLogger(__name__)

RPC_HANDLED = Counter("meshsearch_rpc_handled_total", "RPCs completed, by method and status code.", ["method", "code"])
RPC_LATENCY = Histogram(
    "meshsearch_rpc_duration_seconds",
    "Server-side RPC latency by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def _adopt_request_id(servicer_context: grpc.aio.ServicerContext[Any, Any]) -> None:
    metadata = dict(servicer_context.invocation_metadata() or ())
    sent = metadata.get(context.REQUEST_ID_METADATA_KEY)
    # A text key's value is a str; anything else (absent, or bytes from a misnamed -bin key) gets a fresh id.
    context.request_id.set(sent if isinstance(sent, str) and sent else context.new_request_id())


def _ended_code(servicer_context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    """Why gRPC cancelled a handler: its deadline passed, or its client went away."""
    remaining = servicer_context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


async def _abort_with(servicer_context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    if isinstance(exc, MeshError):
        details = status_details(exc)
        # Keep what the handler set already (the rate-limit headers) beside the details.
        earlier = tuple(item for item in servicer_context.trailing_metadata() or () if item[0] != STATUS_DETAILS_KEY)
        await servicer_context.abort(
            exc.code, exc.message, trailing_metadata=(*earlier, (STATUS_DETAILS_KEY, details.SerializeToString()))
        )
    log.exception("unhandled error in %s", method)
    await servicer_context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see server logs")


def _final_code(servicer_context: grpc.aio.ServicerContext[Any, Any], ended: grpc.StatusCode | None) -> str:
    if ended is not None:
        return ended.name
    code = servicer_context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else grpc.StatusCode(code).name


def _record(
    method: str, servicer_context: grpc.aio.ServicerContext[Any, Any], started: float, ended: grpc.StatusCode | None
) -> None:
    """Metrics and one access-log line per RPC (the request id is added by the log formatter)."""
    elapsed = time.perf_counter() - started
    code = _final_code(servicer_context, ended)
    RPC_LATENCY.labels(method).observe(elapsed)
    RPC_HANDLED.labels(method, code).inc()
    log.info("rpc", extra={"method": method, "code": code, "duration_ms": round(elapsed * 1000, 2)})


Wrapper = Callable[[Callable[..., Any], bool], Callable[..., Any]]


def rebuild_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    answered_once: Wrapper,
    streamed: Wrapper,
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its behavior wrapped: by `answered_once` for unary and client-streaming
    calls, by `streamed` for calls that stream responses. Each wrapper gets the behavior and
    whether the request is a single message. (Interceptors of other services use this too, so
    that the four kinds of gRPC handler are told apart in one place.)"""
    kinds = (
        (handler.unary_unary, grpc.unary_unary_rpc_method_handler, answered_once, True),
        (handler.unary_stream, grpc.unary_stream_rpc_method_handler, streamed, True),
        (handler.stream_unary, grpc.stream_unary_rpc_method_handler, answered_once, False),
        (handler.stream_stream, grpc.stream_stream_rpc_method_handler, streamed, False),
    )
    for behavior, make, wrap, unary_request in kinds:
        if behavior is not None:
            return make(
                wrap(behavior, unary_request),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise ValueError("a gRPC method handler has no behavior")


Admission = Callable[[str, "grpc.aio.ServicerContext[Any, Any]"], Awaitable[None]]
"""A check of a call from its method, metadata and peer alone, run before its first request
message is read (it raises a MeshError to refuse): who the caller is, and whether it may call."""


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler; see the module docstring. `read_deadline_s` / `write_deadline_s`
    bound unary calls that arrive without a deadline; `limits` bound each request message;
    `admissions` run, in order, before any request message is read; `budget` bounds the bytes
    of all calls being read at once; a request stream silent for `stream_idle_s` (0: no limit)
    is ended, so an idle stream cannot keep its share of that budget.

    To run admissions first, every handler is served as a request-streaming one (gRPC reads a
    streamed request only when asked; on the wire a unary request is a stream of one message),
    and its one message read after admission. A refused caller's body is never read or parsed."""

    def __init__(
        self,
        read_deadline_s: float,
        write_deadline_s: float,
        limits: RequestLimits | None = None,
        admissions: Sequence[Admission] = (),
        budget: ReadBudget | None = None,
        stream_idle_s: float = 0.0,
    ) -> None:
        self._read_deadline_s = read_deadline_s
        self._stream_idle_s = stream_idle_s
        self._write_deadline_s = write_deadline_s
        self._limits = limits or RequestLimits()
        self._admissions = tuple(admissions)
        self._budget = budget or ReadBudget(0)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        deserializer = bounded_deserializer(handler.request_deserializer, self._limits.limit(method))
        kinds = (
            (handler.unary_unary, grpc.stream_unary_rpc_method_handler, self._wrap_unary, True),
            (handler.unary_stream, grpc.stream_stream_rpc_method_handler, self._wrap_stream, True),
            (handler.stream_unary, grpc.stream_unary_rpc_method_handler, self._wrap_unary, False),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, self._wrap_stream, False),
        )
        for behavior, make, wrap, single in kinds:
            if behavior is not None:
                return make(
                    wrap(behavior, method, single),
                    request_deserializer=deserializer,
                    response_serializer=handler.response_serializer,
                )
        raise ValueError("a gRPC method handler has no behavior")

    def _adopt_deadline(self, servicer_context: grpc.aio.ServicerContext[Any, Any], method: str, bounded: bool) -> None:
        """The caller's deadline; for a `bounded` (unary) call without one, its class's default."""
        remaining = servicer_context.time_remaining()
        if bounded:
            context.deadline.set(
                deadlines.inbound_deadline(method, remaining, self._read_deadline_s, self._write_deadline_s)
            )
        else:
            context.deadline.set(None if remaining is None else time.monotonic() + remaining)

    async def _admitted_requests(
        self,
        method: str,
        requests: AsyncIterator[Any],
        single: bool,
        servicer_context: grpc.aio.ServicerContext[Any, Any],
        held: list[int],
    ) -> Any:
        """After every admission: the call's one message (`single`), or its checked stream.
        A stream keeps its share of the read budget (appended to `held`) until it ends."""
        for admit in self._admissions:
            await admit(method, servicer_context)
        share = await self._budget.hold(self._limits.largest, servicer_context.time_remaining())
        if not single:
            held.append(share)
            return _checked_stream(requests, self._stream_idle_s)
        try:
            async for message in requests:
                if isinstance(message, Oversized):
                    raise message.error()
                return message
        finally:
            self._budget.give_back(share)
        raise InvalidArgument("the call ended before its request message was sent", reason="MISSING_REQUEST")

    def _wrap_unary(self, behavior: Callable[..., Any], method: str, single: bool) -> Callable[..., Awaitable[Any]]:
        """Wraps a call answered once: unary (`single`) or client-streaming. (`behavior` is
        typed loosely: grpc's stubs describe the sync API's handlers, while under grpc.aio they
        are coroutine functions and async generator functions.)"""

        async def wrapped(requests: AsyncIterator[Any], servicer_context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            _adopt_request_id(servicer_context)
            self._adopt_deadline(servicer_context, method, bounded=single)
            started = time.perf_counter()
            ended: grpc.StatusCode | None = None
            held: list[int] = []
            try:
                request = await self._admitted_requests(method, requests, single, servicer_context, held)
                return await behavior(request, servicer_context)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:
                ended = _ended_code(servicer_context)
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never UNKNOWN
                await _abort_with(servicer_context, exc, method)
            finally:
                self._budget.give_back(sum(held))
                _record(method, servicer_context, started, ended)

        return wrapped

    def _wrap_stream(
        self, behavior: Callable[..., Any], method: str, single: bool
    ) -> Callable[..., AsyncIterator[Any]]:
        async def wrapped(
            requests: AsyncIterator[Any], servicer_context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            _adopt_request_id(servicer_context)
            self._adopt_deadline(servicer_context, method, bounded=False)
            started = time.perf_counter()
            ended: grpc.StatusCode | None = None
            held: list[int] = []
            try:
                request = await self._admitted_requests(method, requests, single, servicer_context, held)
                async for response in behavior(request, servicer_context):
                    yield response
            except grpc.aio.AbortError:
                raise
            except (asyncio.CancelledError, GeneratorExit):
                ended = _ended_code(servicer_context)
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to a status, never UNKNOWN
                await _abort_with(servicer_context, exc, method)
            finally:
                self._budget.give_back(sum(held))
                _record(method, servicer_context, started, ended)

        return wrapped


async def _checked_stream(requests: AsyncIterator[Any], idle_s: float) -> AsyncIterator[Any]:
    """The messages of a request stream, each checked against the size limit; the stream
    ends DEADLINE_EXCEEDED when its caller sends nothing for `idle_s` (0: waits forever)."""
    iterator = aiter(requests)
    while True:
        try:
            message = await (asyncio.wait_for(anext(iterator), idle_s) if idle_s > 0 else anext(iterator))
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise DeadlineExceeded(
                f"no request message for {idle_s:g} s: the server ended this stream to free what it held "
                "for it; open a new stream (an upload resumes with the job's id)",
                reason="STREAM_IDLE",
            ) from None
        if isinstance(message, Oversized):
            raise message.error()
        yield message
