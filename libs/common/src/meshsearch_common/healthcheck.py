"""`python -m meshsearch_common.healthcheck PORT`: exit 0 when the gRPC server on this host's
PORT reports SERVING, 1 otherwise. What container health checks run (compose), since the images
carry no grpc_health_probe binary. Speaks TLS when the service's own TLS settings are in the
environment (MESHSEARCH_<SERVICE>_TLS__CERT_FILE), trusting the client CA it was given, or the
system's."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TIMEOUT_S = 3.0


def _credentials() -> grpc.ChannelCredentials | None:
    for name, value in os.environ.items():
        # The server's own TLS, not the client certificate a service uses for its upstreams.
        own = name.endswith("_TLS__CERT_FILE") and not name.endswith("_UPSTREAM_TLS__CERT_FILE")
        if name.startswith("MESHSEARCH_") and own and value:
            prefix = name.removesuffix("CERT_FILE")
            ca = os.environ.get(f"{prefix}CLIENT_CA_FILE", "")
            key = os.environ.get(f"{prefix}KEY_FILE", "")
            # Our own certificate and key prove who we are where mutual TLS is required.
            return grpc.ssl_channel_credentials(
                Path(ca).read_bytes() if ca else None, Path(key).read_bytes(), Path(value).read_bytes()
            )
    return None


def serving(port: int) -> bool:
    credentials = _credentials()
    target = f"localhost:{port}" if credentials else f"127.0.0.1:{port}"
    opened = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with opened as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S
            )
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: python -m meshsearch_common.healthcheck PORT")
    sys.exit(0 if serving(int(sys.argv[1])) else 1)


if __name__ == "__main__":
    main()
