"""What the client reads from the public contract itself rather than from a hand-kept list."""

from __future__ import annotations

from meshsearch.api.v1 import api_pb2
from meshsearch_common.contracts import idempotent_methods


def idempotent_paths() -> frozenset[str]:
    """`/package.Service/Method` of every unary method that `protos/` marks safe to repeat."""
    return frozenset(
        f"/{service.full_name}/{method}"
        for service in api_pb2.DESCRIPTOR.services_by_name.values()
        for method in idempotent_methods(service)
    )
