"""Who may call a service of the mesh: checked from the connection and metadata alone, before
a request is read (an admission of the common server interceptor).

Two checks, each on when configured, both when both are:
- identity (`CallerPolicy.identities`, with mutual TLS): the client certificate's identities,
  its DNS and URI subject alternative names and its common name, must include one the service
  allows (the search service: api and worker). A certificate the CA signed for another
  workload is refused PERMISSION_DENIED naming it: being signed is not being allowed.
- a shared secret (`CallerPolicy.token`): the caller sends it as `x-meshsearch-caller-token`
  metadata, or is refused UNAUTHENTICATED. `meshsearch up` and compose give each stack its own,
  so that another local user, or another container on the network, cannot call the embedder
  or the search service, though their ports are reachable.
Health checking stays open (orchestrators probe it), and so does reflection, which describes
only the contract. Callers set their side in `UpstreamSettings` (caller_token, upstream_tls).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import grpc
from pydantic import BaseModel, Field, SecretStr

from meshsearch_common.errors import PermissionDenied, Unauthenticated

CALLER_TOKEN_METADATA_KEY = "x-meshsearch-caller-token"
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
IDENTITY_PROPERTIES = ("x509_subject_alternative_name", "x509_common_name")


class CallerPolicy(BaseModel, frozen=True):
    token: SecretStr = Field(
        SecretStr(""),
        description="Secret every caller must send (x-meshsearch-caller-token metadata); empty: not required.",
    )
    identities: list[str] = Field(
        default_factory=list,
        description="Client certificate identities (DNS or URI SAN, or CN) allowed to call, with mutual TLS; "
        "empty: any certificate the client CA signed.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.token.get_secret_value() or self.identities)


def _is_open(method: str) -> bool:
    return method.lstrip("/").partition("/")[0] in OPEN_SERVICES


def identities_of(servicer_context: grpc.aio.ServicerContext[Any, Any]) -> set[str]:
    """The identities the peer's verified client certificate carries (none without mutual TLS)."""
    auth = servicer_context.auth_context() or {}
    return {
        value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        for name in IDENTITY_PROPERTIES
        for value in auth.get(name, ())
    }


def _sent_token(servicer_context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in servicer_context.invocation_metadata() or ():
        if key == CALLER_TOKEN_METADATA_KEY and isinstance(value, str):
            return value
    return ""


def caller_admission(
    service: str, policy: CallerPolicy
) -> Callable[[str, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
    """The admission that enforces `policy` for `service` (named in refusals)."""
    expected = policy.token.get_secret_value().encode()
    allowed = frozenset(policy.identities)

    async def admit(method: str, servicer_context: grpc.aio.ServicerContext[Any, Any]) -> None:
        if _is_open(method):
            return
        if allowed:
            presented = identities_of(servicer_context)
            if not presented & allowed:
                shown = ", ".join(sorted(presented)) or "no client certificate"
                raise PermissionDenied(
                    f"{service} serves only {', '.join(sorted(allowed))}; this caller is {shown}",
                    reason="CALLER_NOT_ALLOWED",
                )
        if expected and not hmac.compare_digest(_sent_token(servicer_context).encode(), expected):
            raise Unauthenticated(
                f"{service} serves only the mesh's own callers: send its caller token "
                f"({CALLER_TOKEN_METADATA_KEY} metadata)",
                reason="CALLER_TOKEN_REQUIRED",
            )

    return admit


class _Token:
    """Adds the caller token to every call of an operator's channel (the services' own calls
    get it from the client layer). grpc.aio files an interceptor under the first kind it is,
    so each kind has a class of its own."""

    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), (CALLER_TOKEN_METADATA_KEY, self._token))
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnaryToken(_Token, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)


class _UnaryStreamToken(_Token, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request)


class _StreamUnaryToken(_Token, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStreamToken(_Token, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(client_call_details), request_iterator)


class _WithTokenSync(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._token = token

    def _details(self, details: Any) -> Any:
        return _SyncDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), (CALLER_TOKEN_METADATA_KEY, self._token)],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


class _SyncCallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class _SyncDetails(_SyncCallDetails, grpc.ClientCallDetails):
    """grpc.ClientCallDetails is an interface with no constructor; this fills it in."""


def operator_channel(target: str, token: str, **options: Any) -> grpc.aio.Channel:
    """An asyncio channel to an internal service for an operator's tool (tests, benchmarks,
    the CLI), sending `token` with every call."""
    kinds = (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)
    interceptors = [kind(token) for kind in kinds] if token else []
    return grpc.aio.insecure_channel(target, interceptors=interceptors, **options)


def operator_channel_sync(target: str, token: str, **options: Any) -> grpc.Channel:
    """`operator_channel` for blocking code."""
    channel = grpc.insecure_channel(target, **options)
    return grpc.intercept_channel(channel, _WithTokenSync(token)) if token else channel
