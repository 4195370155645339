"""The stack a long mixed load runs on (the soak, the mixed-load fault test): auth on, so that
keys can be made and revoked, with rate limits above what the load asks, and a tenant key."""

from __future__ import annotations

import secrets

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_harness.secured import bearer

TENANT = "load"


def auth_env(bootstrap_key: str) -> dict[str, str]:
    """The api's settings for a load: auth on, limits the load stays under."""
    return {
        "MESHSEARCH_API_AUTH_ENABLED": "true",
        "MESHSEARCH_API_BOOTSTRAP_KEY": bootstrap_key,
        "MESHSEARCH_API_RATE_LIMIT_READ_PER_S": "1000",
        "MESHSEARCH_API_RATE_LIMIT_WRITE_PER_S": "1000",
        "MESHSEARCH_API_KEY_MAX_WRITE_PER_S": "1000",
    }


def new_bootstrap_key() -> str:
    return secrets.token_hex(24)


def tenant_key(stack: EmbeddedStack, bootstrap_key: str, target: str = "") -> str:
    """A read and write key of TENANT, made with the bootstrap key."""
    with grpc.insecure_channel(target or f"127.0.0.1:{stack.ports.api}") as channel:
        made = pb_grpc.KeyServiceStub(channel).CreateApiKey(
            pb.CreateApiKeyRequest(
                tenant=TENANT, roles=[pb.ROLE_READ, pb.ROLE_WRITE], read_per_s=1000, write_per_s=1000
            ),
            metadata=bearer(bootstrap_key),
            timeout=30,
        )
    return str(made.secret)
