"""Which role each public RPC needs. Deny by default: a method missing from this table is
refused to everyone (and the contract test that walks every RPC fails), so a new RPC cannot
ship without an access rule. Health checking and reflection stay open: orchestrators probe
them without keys, and they reveal only the public contract."""

from __future__ import annotations

from typing import Any

from meshsearch_api.auth.principal import Role

OPEN_SERVICES = frozenset(
    {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
KEY_SERVICE = "meshsearch.api.v1.KeyService"

_RULES: dict[str, dict[str, Role]] = {
    "meshsearch.api.v1.CollectionService": {
        "CreateCollection": Role.WRITE,
        "GetCollection": Role.READ,
        "ListCollections": Role.READ,
        "DeleteCollection": Role.WRITE,
    },
    "meshsearch.api.v1.DocumentService": {
        "IndexDocuments": Role.WRITE,
        "GetDocuments": Role.READ,
        "DeleteDocuments": Role.WRITE,
        "ListDocuments": Role.READ,
    },
    "meshsearch.api.v1.SearchService": {"Search": Role.READ, "SearchBatch": Role.READ},
    "meshsearch.api.v1.IngestService": {
        "StartIngest": Role.WRITE,
        "GetJob": Role.READ,
        "ListJobs": Role.READ,
        "CancelJob": Role.WRITE,
        "WatchJob": Role.READ,
        "EstimateIngest": Role.READ,
        "ListDeadLetters": Role.READ,
        "RedriveDeadLetters": Role.WRITE,
    },
    KEY_SERVICE: {"CreateApiKey": Role.ADMIN, "ListApiKeys": Role.ADMIN, "RevokeApiKey": Role.ADMIN},
}
METHOD_ROLES: dict[str, Role] = {
    f"/{service}/{method}": role for service, methods in _RULES.items() for method, role in methods.items()
}


def service_of(method: str) -> str:
    """`/pkg.Service/Method` -> `pkg.Service`."""
    return method.lstrip("/").partition("/")[0]


def is_open(method: str) -> bool:
    return service_of(method) in OPEN_SERVICES


def rate_class(role: Role) -> str:
    """Reads and writes are limited apart: a bulk writer does not use up a key's searches."""
    return "read" if role is Role.READ else "write"


def cost(method: str, request: Any) -> int:
    """Units of a key's rate limit a call takes: one, except where one call bundles several
    reads of the same kind, which take one each (a SearchBatch of 32 searches counts as 32
    searches, so batching cannot multiply a key's search rate). Writes count calls; their
    volume is bounded by the tenant's quotas."""
    if method == "/meshsearch.api.v1.SearchService/SearchBatch":
        return max(1, len(request.searches))
    return 1
