"""Domain errors raised by service cores, and the one table that maps them to gRPC codes.

Cores raise these with a message a caller can act on; the server interceptor turns them into
statuses. Anything else that escapes a handler is a bug and becomes INTERNAL (and is logged).

Layout: the hierarchy first, then the tables that relate it to gRPC codes, then helpers.
"""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

# --- the hierarchy ---------------------------------------------------------------------------


class MeshError(Exception):
    """Base of all errors a caller is meant to see. `code` is the gRPC status to send."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(MeshError):
    """The request is malformed or breaks a documented limit; retrying it unchanged fails again."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MeshError):
    """A named entity (collection, document) does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MeshError):
    """An entity with that name exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MeshError):
    """The system is not in a state that allows the call (for example a model mismatch)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRange(MeshError):
    """A value is valid in form but past the end of what exists (a page past the last one)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Unauthenticated(MeshError):
    """The call carries no valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MeshError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Cancelled(MeshError):
    """The operation was cancelled, typically by its caller."""

    code = grpc.StatusCode.CANCELLED


class ResourceExhausted(MeshError):
    """A quota, rate limit or capacity bound is reached; retry later (after `retry_after_s`)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(MeshError):
    """A dependency is down or overloaded; the call may succeed if retried later."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(MeshError):
    """The caller's deadline passed before the work could finish."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


# --- relation to gRPC codes ------------------------------------------------------------------

# Upstream statuses that say "the caller sent something wrong (or gave up)", never "the upstream
# is sick": they pass through to our caller with their code and message, and never count
# against an upstream's breaker.
CALLER_ERRORS: dict[grpc.StatusCode, type[MeshError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.CANCELLED: Cancelled,
}
CALLER_ERROR_CODES: frozenset[grpc.StatusCode] = frozenset(CALLER_ERRORS)

RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def from_upstream(upstream: str, error: grpc.aio.AioRpcError) -> MeshError:
    """Translate an upstream's failure into the error our own caller should see.

    Caller errors keep their code and message; RESOURCE_EXHAUSTED keeps its RetryInfo; a
    timeout names the upstream; everything else (UNAVAILABLE, INTERNAL, UNKNOWN, ...) becomes
    UNAVAILABLE naming the upstream, since from our caller's point of view a sick dependency
    is a temporary condition, not a bug in their request.
    """
    code = error.code()
    if code in CALLER_ERRORS:
        return CALLER_ERRORS[code](error.details() or code.name)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(f"{upstream}: {error.details()}", retry_after_s=retry_after_of(error))
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"{upstream} did not answer within the deadline: {error.details()}")
    return Unavailable(f"{upstream} is unavailable: {error.details() or code.name}")


def status_details(error: MeshError) -> status_pb2.Status | None:
    """The google.rpc.Status (with standard error details) to send for `error`, if any.

    ResourceExhausted carries a RetryInfo, so clients in every language know when to retry.
    """
    if isinstance(error, ResourceExhausted) and error.retry_after_s is not None:
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=error.message)
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, int(error.retry_after_s * 1000)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return status
    return None


def retry_after_of(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay in seconds carried by an upstream's error, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.type_url == RETRY_INFO_TYPE:
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return float(info.retry_delay.ToMilliseconds()) / 1000
    return None


# --- validation helpers ----------------------------------------------------------------------

T = TypeVar("T")


def enum_member(mapping: dict[int, T], value: int, field: str) -> T:
    """Translate a wire enum value, or INVALID_ARGUMENT naming the field and the accepted values
    (clients built from an older or newer contract can send numbers this server does not know)."""
    try:
        return mapping[value]
    except KeyError:
        accepted = ", ".join(str(v) for v in sorted(mapping))
        raise InvalidArgument(f"{field} {value} is not a known value; use one of {accepted}") from None


def finite(value: float, field: str) -> float:
    """INVALID_ARGUMENT unless `value` is a finite number."""
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidArgument(f"{field} must be a finite number")
    return value
