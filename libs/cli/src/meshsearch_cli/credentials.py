"""How the CLI proves who it is: an API key sent as `authorization: Bearer <key>` on every
call (MESHSEARCH_API_KEY), and TLS to the api when a CA certificate is given
(MESHSEARCH_TLS_CA_FILE; with MESHSEARCH_TLS_CERT_FILE and MESHSEARCH_TLS_KEY_FILE the CLI
also presents a client certificate)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

KEY_VARIABLE = "MESHSEARCH_API_KEY"
CA_VARIABLE = "MESHSEARCH_TLS_CA_FILE"
CERT_VARIABLE = "MESHSEARCH_TLS_CERT_FILE"
PRIVATE_KEY_VARIABLE = "MESHSEARCH_TLS_KEY_FILE"


class _BearerKey:
    """Adds the key to a call's metadata."""

    def __init__(self, key: str) -> None:
        self._header = ("authorization", f"Bearer {key}")

    def _with_key(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# One class per kind of call: grpc.aio files each interceptor under the first kind it
# implements, so one class implementing all four would only ever see unary calls.
class _UnaryUnaryKey(_BearerKey, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_key(details), request)


class _UnaryStreamKey(_BearerKey, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._with_key(details), request)


class _StreamUnaryKey(_BearerKey, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_key(details), requests)


class _StreamStreamKey(_BearerKey, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._with_key(details), requests)


def bearer_key_interceptors(key: str) -> list[grpc.aio.ClientInterceptor]:
    """Interceptors that send `key` on every call, of every kind."""
    return [_UnaryUnaryKey(key), _UnaryStreamKey(key), _StreamUnaryKey(key), _StreamStreamKey(key)]


def tls_credentials(env: Mapping[str, str]) -> grpc.ChannelCredentials | None:
    """TLS credentials from MESHSEARCH_TLS_* in `env`, or None for plaintext. (The embedded
    stack's health probes use them too.)"""

    def read(variable: str) -> bytes | None:
        path = env.get(variable)
        return Path(path).read_bytes() if path else None

    ca = read(CA_VARIABLE)
    if ca is None:
        return None
    return grpc.ssl_channel_credentials(ca, read(PRIVATE_KEY_VARIABLE), read(CERT_VARIABLE))


def open_channel(target: str) -> grpc.aio.Channel:
    """A channel to the api with the credentials the environment gives."""
    key = os.environ.get(KEY_VARIABLE, "")
    interceptors: Sequence[grpc.aio.ClientInterceptor] = bearer_key_interceptors(key) if key else []
    credentials = tls_credentials(os.environ)
    if credentials is None:
        return grpc.aio.insecure_channel(target, interceptors=interceptors)
    return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)
