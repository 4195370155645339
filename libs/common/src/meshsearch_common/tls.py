"""TLS for every gRPC port and every call between services, configured by file paths.

Server side (every service; `ServerTls` in its settings): a certificate chain and key turn the
port into TLS; a client CA on top makes it mutual TLS, refusing clients without a certificate
signed by that CA. The files are read again whenever they change on disk, checked at each new
connection, so a renewed certificate (cert-manager rewriting a mounted Secret, say) is served
without a restart; connections already open keep the one they started with.

Client side (the api and workers calling the embedder and the search service; `ClientTls`): a
CA to trust, and a client certificate for mutual TLS. Client files are read when the channel
opens: rotating them takes a restart (a rolling one in Kubernetes).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc
from pydantic import BaseModel, Field, model_validator

log = logging.getLogger(__name__)


class ServerTls(BaseModel, frozen=True):
    cert_file: str = Field("", description="PEM certificate chain of this server; empty: plaintext.")
    key_file: str = Field("", description="PEM private key of cert_file.")
    client_ca_file: str = Field(
        "", description="PEM CA bundle; when set, clients must present a certificate it signed (mutual TLS)."
    )

    @model_validator(mode="after")
    def _complete(self) -> ServerTls:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("TLS needs both cert_file and key_file")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("client_ca_file (mutual TLS) needs cert_file and key_file too")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


class ClientTls(BaseModel, frozen=True):
    ca_file: str = Field("", description="PEM CA bundle that signed the upstreams' certificates; empty: plaintext.")
    cert_file: str = Field("", description="PEM client certificate chain, for upstreams that require mutual TLS.")
    key_file: str = Field("", description="PEM private key of cert_file.")
    server_name: str = Field(
        "", description="Name to expect in the upstreams' certificates, when it differs from the target's host."
    )

    @model_validator(mode="after")
    def _complete(self) -> ClientTls:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("a client certificate needs both cert_file and key_file")
        if self.cert_file and not self.ca_file:
            raise ValueError("a client certificate (cert_file) needs ca_file too")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file)


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def _mtimes(paths: list[str]) -> tuple[float, ...]:
    return tuple(os.stat(path).st_mtime_ns for path in paths if path)


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """Credentials that reload the files when they change (see the module docstring)."""
    paths = [tls.cert_file, tls.key_file, tls.client_ca_file]
    loaded = {"mtimes": _mtimes(paths)}

    def configuration() -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(_read(tls.key_file), _read(tls.cert_file))],
            root_certificates=_read(tls.client_ca_file) if tls.client_ca_file else None,
        )

    def fetch_if_changed() -> grpc.ServerCertificateConfiguration | None:
        try:
            mtimes = _mtimes(paths)
            if mtimes == loaded["mtimes"]:
                return None
            fresh = configuration()
        except (OSError, ValueError) as exc:  # half-written files: keep serving the old ones
            log.warning("TLS files changed but cannot be loaded; serving the previous ones", extra={"error": str(exc)})
            return None
        loaded["mtimes"] = mtimes
        log.info("TLS certificate reloaded", extra={"cert_file": tls.cert_file})
        return fresh

    return grpc.dynamic_ssl_server_credentials(
        configuration(),
        fetch_if_changed,  # type: ignore[arg-type]  # grpc's stub omits that None means "unchanged"
        require_client_authentication=bool(tls.client_ca_file),
    )


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        _read(tls.ca_file),
        _read(tls.key_file) if tls.key_file else None,
        _read(tls.cert_file) if tls.cert_file else None,
    )


def channel_options(tls: ClientTls) -> list[tuple[str, str]]:
    return [("grpc.ssl_target_name_override", tls.server_name)] if tls.enabled and tls.server_name else []
