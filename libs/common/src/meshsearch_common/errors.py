"""Domain errors raised by service cores, and the one table that maps them to gRPC codes.

Cores raise these with a message a caller can act on; the server interceptor turns them into
statuses. Anything else that escapes a handler is a bug and becomes INTERNAL (and is logged).

Layout: the hierarchy first, then the tables that relate it to gRPC codes, then helpers.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

# --- the hierarchy ---------------------------------------------------------------------------


class MeshError(Exception):
    """Base of all errors a caller is meant to see. `code` is the gRPC status to send.

    Every error also goes out with standard details (`status_details`): `field` names the
    request field at fault (a google.rpc.BadRequest field violation), `reason` is a stable
    UPPER_SNAKE_CASE cause for programs to branch on (google.rpc.ErrorInfo; by default the
    code's name)."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str = "", reason: str = "") -> None:
        message, field = _bounded(message), _bounded(field)
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason or self.code.name


# A message or field name may quote the caller's input (a name, an id); it goes out in the
# trailers, which gRPC clients cap (8 KiB by default), so a huge input must not make it huge.
MAX_MESSAGE_CHARS = 1024


def _bounded(text: str) -> str:
    if len(text) <= MAX_MESSAGE_CHARS:
        return text
    return f"{text[: MAX_MESSAGE_CHARS - 40]}... ({len(text) - MAX_MESSAGE_CHARS + 40} more characters)"


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
    """A quota, rate limit or capacity bound is reached; retry later (after `retry_after_s`).
    `quota_subject` names the quota spent (a google.rpc.QuotaFailure), such as `key:<id>:read`
    or `tenant:<name>:documents`."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(
        self,
        message: str,
        retry_after_s: float | None = None,
        *,
        field: str = "",
        reason: str = "",
        quota_subject: str = "",
    ) -> None:
        super().__init__(message, field=field, reason=reason)
        self.retry_after_s = retry_after_s
        self.quota_subject = quota_subject


class Unavailable(MeshError):
    """A dependency is down or overloaded; the call may succeed if retried later (after
    `retry_after_s` when known, for example while a circuit breaker is open)."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, retry_after_s: float | None = None, *, field: str = "", reason: str = "") -> None:
        super().__init__(message, field=field, reason=reason)
        self.retry_after_s = retry_after_s


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
# What a client may never retry unchanged: its request is wrong, or the method is unknown to
# the server. CANCELLED is not among them: a client that did not cancel got it from a server
# shutting down, and may try again.
FINAL_CODES: frozenset[grpc.StatusCode] = (CALLER_ERROR_CODES - {grpc.StatusCode.CANCELLED}) | {
    grpc.StatusCode.UNIMPLEMENTED
}

STATUS_DETAILS_KEY = "grpc-status-details-bin"


ERROR_DOMAIN = "meshsearch.io"  # google.rpc.ErrorInfo.domain of every error we send
DEFAULT_RETRY_AFTER_S = 1.0  # RetryInfo delay of an UNAVAILABLE with no better estimate


def from_upstream(upstream: str, error: grpc.aio.AioRpcError) -> MeshError:
    """Translate an upstream's failure into the error our own caller should see.

    Caller errors keep their code, message, field and reason (but CANCELLED by the upstream is
    UNAVAILABLE: our caller did not cancel); RESOURCE_EXHAUSTED keeps its
    RetryInfo; a timeout names the upstream; everything else (UNAVAILABLE, INTERNAL, UNKNOWN,
    ...) becomes UNAVAILABLE naming the upstream, since from our caller's point of view a sick
    dependency is a temporary condition, not a bug in their request. Its words are passed on
    only when a meshsearch server wrote them (they carry an ErrorInfo reason); gRPC's own
    ("failed to connect to all addresses; ... ipv4:10.0.3.7:50052: Connection refused") name
    the mesh's addresses, which are no caller's business, and stay in our log.
    """
    code = error.code()
    field, reason = _field_and_reason(error)
    if code == grpc.StatusCode.CANCELLED:
        # Our own caller did not cancel (this handler would have been cancelled instead): the
        # upstream dropped the call, for instance while shutting down. Retryable, not a caller error.
        return Unavailable(
            f"{upstream} cancelled the call (it may be shutting down); retry",
            reason=f"{upstream.upper()}_UNAVAILABLE",
        )
    if code in CALLER_ERRORS:
        return CALLER_ERRORS[code](error.details() or code.name, field=field, reason=reason)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(f"{upstream}: {error.details()}", retry_after_s=retry_after_of(error), reason=reason)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(
            f"{upstream} did not answer within the deadline: {error.details()}", reason="UPSTREAM_DEADLINE_EXCEEDED"
        )
    said = error.details() if reason else ""
    return Unavailable(
        f"{upstream} is unavailable: {said or f'{code.name} (it could not be reached, or failed); retry shortly'}",
        retry_after_s=retry_after_of(error),
        reason=reason or f"{upstream.upper()}_UNAVAILABLE",
    )


def status_details(error: MeshError) -> status_pb2.Status:
    """The google.rpc.Status, with standard error details, to send for `error`, so that a
    client in any language can act on it without parsing the message:
    - BadRequest (the field at fault) on INVALID_ARGUMENT;
    - PreconditionFailure (which state is wrong, and where) on FAILED_PRECONDITION;
    - RetryInfo (when to retry) on RESOURCE_EXHAUSTED and UNAVAILABLE;
    - QuotaFailure (which quota) on RESOURCE_EXHAUSTED from a rate limit or quota;
    - ErrorInfo (reason, domain) on every error.
    """
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    if isinstance(error, InvalidArgument):
        status.details.add().Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)
                ]
            )
        )
    if isinstance(error, FailedPrecondition):
        status.details.add().Pack(
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=error.reason or "FAILED_PRECONDITION", subject=error.field, description=error.message
                    )
                ]
            )
        )
    if isinstance(error, ResourceExhausted | Unavailable):
        retry_after = error.retry_after_s if error.retry_after_s is not None else DEFAULT_RETRY_AFTER_S
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, int(retry_after * 1000)))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    if isinstance(error, ResourceExhausted) and error.quota_subject:
        violation = error_details_pb2.QuotaFailure.Violation(subject=error.quota_subject, description=error.message)
        status.details.add().Pack(error_details_pb2.QuotaFailure(violations=[violation]))
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    return status


class FailedCall(Protocol):
    """What a failed call offers in both gRPC APIs (grpc.RpcError from a sync call is a
    grpc.Call; grpc.aio.AioRpcError has the same methods)."""

    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


# The standard google.rpc details meshsearch sends, by message name.
DETAIL_TYPES: tuple[type[Message], ...] = (
    error_details_pb2.BadRequest,
    error_details_pb2.ErrorInfo,
    error_details_pb2.RetryInfo,
    error_details_pb2.PreconditionFailure,
    error_details_pb2.QuotaFailure,
)


def error_details(error: FailedCall) -> dict[str, Any]:
    """The google.rpc details of a failed call, decoded from its grpc-status-details-bin
    trailer and keyed by message name ("RetryInfo", "ErrorInfo", "BadRequest", ...)."""
    found: dict[str, Any] = {}
    for key, value in error.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        for detail in status_pb2.Status.FromString(value).details:
            for kind in DETAIL_TYPES:
                if detail.Is(kind.DESCRIPTOR):
                    message = kind()
                    detail.Unpack(message)
                    found[kind.DESCRIPTOR.name] = message
    return found


def _field_and_reason(error: FailedCall) -> tuple[str, str]:
    """The BadRequest field and ErrorInfo reason an upstream sent, or empty strings."""
    details = error_details(error)
    bad_request, info = details.get("BadRequest"), details.get("ErrorInfo")
    field = bad_request.field_violations[0].field if bad_request and bad_request.field_violations else ""
    return field, info.reason if info else ""


def retry_after_of(error: FailedCall) -> float | None:
    """The RetryInfo delay in seconds carried by a failed call, if any."""
    info = error_details(error).get("RetryInfo")
    return None if info is None else float(info.retry_delay.ToMilliseconds()) / 1000


# --- validation helpers ----------------------------------------------------------------------

T = TypeVar("T")


def enum_member(mapping: dict[int, T], value: int, field: str) -> T:
    """Translate a wire enum value, or INVALID_ARGUMENT naming the field and the accepted values
    (clients built from an older or newer contract can send numbers this server does not know)."""
    try:
        return mapping[value]
    except KeyError:
        accepted = ", ".join(str(v) for v in sorted(mapping))
        raise InvalidArgument(f"{field} {value} is not a known value; use one of {accepted}", field=field) from None


def finite(value: float, field: str) -> float:
    """INVALID_ARGUMENT unless `value` is a finite number."""
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidArgument(f"{field} must be a finite number", field=field)
    return value
