"""Two api replicas with auth on, sharing one Redis of their own (so that a test can stop it)
and the session stack's embedder, search service, database and worker; plus helpers to call
them with a key."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.stack import EmbeddedStack, Ports

CACHE_TTL_S = 1.0  # the revocation test waits this long; benchmarks pass their own
MAX_DOCUMENTS = 40
MAX_INGEST_BYTES = 30_000
LARGE_TENANT = "large-tenant"  # its document quota is raised above MAX_DOCUMENTS by configuration
LARGE_TENANT_MAX_DOCUMENTS = 3 * MAX_DOCUMENTS
FEW_JOBS_TENANT = "few-jobs-tenant"  # may run two ingest jobs at once, and hold two collections


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@dataclass
class SecuredApis:
    replicas: list[EmbeddedStack]
    bootstrap_key: str

    def target(self, replica: int = 0) -> str:
        return f"127.0.0.1:{self.replicas[replica].ports.api}"

    def new_key(
        self, tenant: str, *roles: Any, read_per_s: float = 0, write_per_s: float = 0, ttl: timedelta | None = None
    ) -> str:
        """A key of `tenant` with `roles` (read and write by default), made with the bootstrap key;
        it expires after `ttl` (None: never)."""
        request = pb.CreateApiKeyRequest(
            tenant=tenant,
            roles=list(roles or (pb.ROLE_READ, pb.ROLE_WRITE)),
            read_per_s=read_per_s,
            write_per_s=write_per_s,
        )
        if ttl is not None:
            request.ttl.FromTimedelta(ttl)
        with grpc.insecure_channel(self.target()) as channel:
            answer: pb.CreateApiKeyResponse = pb_grpc.KeyServiceStub(channel).CreateApiKey(
                request, metadata=bearer(self.bootstrap_key), timeout=30
            )
        return answer.secret


def start_secured_apis(
    stack: EmbeddedStack,
    data_dir: Path,
    cache_ttl_s: float = CACHE_TTL_S,
    extra_env: Mapping[str, str] | None = None,
    count: int = 2,
) -> Iterator[SecuredApis]:
    """`count` api replicas with auth on, sharing `stack`'s upstreams, database and one Redis;
    `extra_env` adds or overrides their settings."""
    extra_env = extra_env or {}
    bootstrap_key = secrets.token_hex(24)
    env = {
        "MESHSEARCH_API_AUTH_ENABLED": "true",
        "MESHSEARCH_API_BOOTSTRAP_KEY": bootstrap_key,
        "MESHSEARCH_API_AUTH_CACHE_TTL_S": str(cache_ttl_s),
        "MESHSEARCH_API_RATE_LIMIT_READ_PER_S": "1000",
        "MESHSEARCH_API_RATE_LIMIT_WRITE_PER_S": "1000",
        "MESHSEARCH_API_KEY_MAX_WRITE_PER_S": "1000",  # the default above may not pass the ceiling
        "MESHSEARCH_API_RATE_LIMIT_FALLBACK_S": "1",
        "MESHSEARCH_API_TENANT_MAX_DOCUMENTS": str(MAX_DOCUMENTS),
        "MESHSEARCH_API_TENANT_COUNT_CACHE_S": "0",  # every quota check sees the stored count
        "MESHSEARCH_API_TENANT_MAX_INGEST_BYTES_PER_DAY": str(MAX_INGEST_BYTES),
        "MESHSEARCH_API_TENANT_QUOTAS": json.dumps(
            {
                LARGE_TENANT: {"max_documents": LARGE_TENANT_MAX_DOCUMENTS, "interactive_jobs": True},
                FEW_JOBS_TENANT: {"max_running_jobs": 2, "max_collections": 2},
            }
        ),
        # Every call of a test run comes from one address and tries many wrong keys on purpose:
        # the lockouts are off here and tried on replicas of their own.
        "MESHSEARCH_API_AUTH_MAX_FAILURES_PER_PEER": "0",
        "MESHSEARCH_API_AUTH_MAX_FAILURES_PER_KEY": "0",
        **extra_env,
    }
    replicas = [
        EmbeddedStack(
            data_dir / f"api{i}",
            Ports.ephemeral(),
            database_url=stack.database_url,
            databases=stack.databases,
            extra_env=env,
            caller_token=stack.caller_token,
        )
        for i in range(1, count + 1)
    ]
    for replica in replicas:
        replica.ports = replace(replica.ports, embedder=stack.ports.embedder, search=stack.ports.search)
    try:
        replicas[0].start(services=("api",))  # and its Redis, which the other replicas share
        for replica in replicas[1:]:
            replica.redis_url = replicas[0].redis_url
            replica.state_redis_url = replicas[0].state_redis_url
            replica.start(services=("api",))
        yield SecuredApis(replicas, bootstrap_key)
    finally:
        for replica in reversed(replicas):
            replica.stop()
