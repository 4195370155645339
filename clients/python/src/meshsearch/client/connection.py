"""Where and how to reach the api: target, key and TLS, given directly or read from the
environment the CLI and the demo share."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from meshsearch_common import keepalive, tls
from meshsearch_common.limits import GRPC_MAX_MESSAGE_BYTES
from meshsearch_common.tls import ClientTls

DEFAULT_TARGET = "127.0.0.1:50051"
TARGET_VARIABLE = "MESHSEARCH_TARGET"
KEY_VARIABLE = "MESHSEARCH_API_KEY"
CA_VARIABLE = "MESHSEARCH_TLS_CA_FILE"
CERT_VARIABLE = "MESHSEARCH_TLS_CERT_FILE"
PRIVATE_KEY_VARIABLE = "MESHSEARCH_TLS_KEY_FILE"
SERVER_NAME_VARIABLE = "MESHSEARCH_TLS_SERVER_NAME"
PLAINTEXT_KEY_VARIABLE = "MESHSEARCH_ALLOW_PLAINTEXT_KEY"


def is_loopback(target: str) -> bool:
    """Whether every address of a gRPC target ("host:port", "dns:///host:port",
    "ipv4:a:p,b:p", "unix:path") is on this machine, so nothing sent to it crosses a network."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    address = target.split("///", 1)[-1] if target.startswith("dns:") else target
    for prefix in ("ipv4:", "ipv6:"):
        address = address.removeprefix(prefix)
    return all(_loopback_host(part.strip()) for part in address.split(","))


def _loopback_host(host_port: str) -> bool:
    """The whole host, not a prefix of it: "127.0.0.1.example.net" is someone else's machine."""
    if host_port.startswith("["):  # [v6]:port
        host = host_port[1 : host_port.find("]")]
    elif host_port.count(":") == 1:  # host:port
        host = host_port.split(":")[0]
    else:  # a bare host, or a bare IPv6 address
        host = host_port
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PlaintextKey(ValueError):
    """An API key would be sent unencrypted to another machine."""


@dataclass(frozen=True)
class Connection:
    """`target` is any gRPC target ("host:port", "dns:///name:port"); with `tls.ca_file` set the
    channel is TLS, mutual when a client certificate is given too."""

    target: str = DEFAULT_TARGET
    api_key: str = ""
    tls: ClientTls = field(default_factory=ClientTls)
    # Send the key without TLS to a target off this machine (a trusted private network only).
    allow_plaintext_key: bool = False

    def __post_init__(self) -> None:
        if self.api_key and not self.tls.enabled and not self.allow_plaintext_key and not is_loopback(self.target):
            raise PlaintextKey(
                f"refusing to send an API key without TLS to {self.target}: anyone on the path could read it. "
                f"Set {CA_VARIABLE} (tls.ca_file) for TLS, or, on a network you trust, "
                f"{PLAINTEXT_KEY_VARIABLE}=true (allow_plaintext_key=True)"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, target: str = "") -> Connection:
        """MESHSEARCH_TARGET, MESHSEARCH_API_KEY and MESHSEARCH_TLS_{CA,CERT,KEY}_FILE (and
        MESHSEARCH_TLS_SERVER_NAME); an explicit `target` wins over the environment's."""
        env = os.environ if env is None else env
        return cls(
            target=target or env.get(TARGET_VARIABLE) or DEFAULT_TARGET,
            api_key=env.get(KEY_VARIABLE, ""),
            tls=ClientTls(
                ca_file=env.get(CA_VARIABLE, ""),
                cert_file=env.get(CERT_VARIABLE, ""),
                key_file=env.get(PRIVATE_KEY_VARIABLE, ""),
                server_name=env.get(SERVER_NAME_VARIABLE, ""),
            ),
            allow_plaintext_key=env.get(PLAINTEXT_KEY_VARIABLE, "").lower() in ("1", "true", "yes"),
        )

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials, or None for plaintext."""
        return tls.channel_credentials(self.tls) if self.tls.enabled else None

    def options(self) -> list[tuple[str, Any]]:
        return [
            # Balance over every address the name resolves to (api replicas behind one name).
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            *keepalive.client_options(),  # a silent link to the api is found in seconds
            *tls.channel_options(self.tls),
        ]
