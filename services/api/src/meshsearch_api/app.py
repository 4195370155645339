"""Wires the api together and runs it under the common server bootstrap."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import grpc
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from meshsearch.api.v1 import api_pb2, api_pb2_grpc
from meshsearch_api import upstreams
from meshsearch_api.auth.admin import KeyAdmin
from meshsearch_api.auth.authenticator import Authenticator
from meshsearch_api.auth.failures import FailureCounter
from meshsearch_api.auth.gate import Gate
from meshsearch_api.auth.grpc_service import KeyServicer
from meshsearch_api.auth.interceptor import AuthInterceptor, OpenStreams
from meshsearch_api.auth.key_store import KeyStore
from meshsearch_api.auth.quotas import TenantQuotas
from meshsearch_api.auth.rate_limits import RateLimiter
from meshsearch_api.catalog import Catalog
from meshsearch_api.core import ApiCore
from meshsearch_api.database import open_pool
from meshsearch_api.documents import DocumentLimits, Documents
from meshsearch_api.embedder_client import EmbedderClient
from meshsearch_api.embedding_cache import EmbeddingCache
from meshsearch_api.grpc_service import CollectionServicer, DocumentServicer, SearchServicer
from meshsearch_api.ingest import queue
from meshsearch_api.ingest.grpc_service import IngestServicer
from meshsearch_api.ingest.service import Ingest
from meshsearch_api.ingest.store import JobStore
from meshsearch_api.request_keys import RequestKeys
from meshsearch_api.request_limits import api_request_limits
from meshsearch_api.search_client import SearchClient
from meshsearch_api.searches import Searches, SearchLimits
from meshsearch_api.settings import ApiSettings
from meshsearch_api.state_redis import warn_if_evicting
from meshsearch_common.client import Upstream
from meshsearch_common.errors import FailedPrecondition
from meshsearch_common.limits import RequestLimits
from meshsearch_common.readiness import Readiness
from meshsearch_common.server_interceptor import Admission

log = logging.getLogger(__name__)


class ApiApp:
    name = "api"

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings
        self._core: Readiness[ApiCore] = Readiness("api")
        self._ingest: Readiness[Ingest] = Readiness("bulk ingestion (its jobs database)")
        self._gate: Readiness[Gate] = Readiness("api")
        self._keys: Readiness[KeyStore] = Readiness("the API key store (in the jobs database)")
        self._key_admin: Readiness[KeyAdmin] = Readiness("API key management (in the jobs database)")
        self._authenticator: Authenticator | None = None
        self._auth = AuthInterceptor(
            self._gate,
            OpenStreams(settings.key_max_streams),
            FailureCounter(settings.auth_max_failures_per_peer, settings.auth_failure_window_s),
        )
        self._upstreams: list[Upstream] = []
        self._redis: redis.Redis | None = None  # the embedding cache
        self._state_redis: redis.Redis | None = None  # rate limits, quotas, request keys
        self._checking: asyncio.Task[None] | None = None
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._opening: asyncio.Task[None] | None = None

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        api_pb2_grpc.add_CollectionServiceServicer_to_server(CollectionServicer(self._core), server)
        api_pb2_grpc.add_DocumentServiceServicer_to_server(DocumentServicer(self._core), server)
        api_pb2_grpc.add_SearchServiceServicer_to_server(SearchServicer(self._core), server)
        if not self.settings.jobs_database_url:
            self._ingest.disable(
                FailedPrecondition(
                    "bulk ingestion is not enabled on this server: set MESHSEARCH_API_JOBS_DATABASE_URL; "
                    "IndexDocuments works without it",
                    reason="INGEST_DISABLED",
                )
            )
            self._key_admin.disable(
                FailedPrecondition(
                    "API keys are not enabled on this server: they are kept in the jobs database "
                    "(MESHSEARCH_API_JOBS_DATABASE_URL)",
                    reason="KEYS_DISABLED",
                )
            )
        api_pb2_grpc.add_IngestServiceServicer_to_server(IngestServicer(self._ingest), server)
        api_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(self._key_admin), server)
        return [service.full_name for service in api_pb2.DESCRIPTOR.services_by_name.values()]

    def interceptors(self) -> Sequence[grpc.aio.ServerInterceptor]:
        return [self._auth]

    def admissions(self) -> Sequence[Admission]:
        return [self._auth.admit]

    def request_limits(self) -> RequestLimits:
        return api_request_limits(self.settings)

    async def start(self) -> None:
        """Open channels and the cache. Upstreams are not required to be up: the api is ready
        to answer (UNAVAILABLE for what needs a missing upstream) as soon as this returns. With
        auth on it returns only once the jobs database, where keys live, is open: until then
        no call could be authenticated, and a replica reporting SERVING would only refuse."""
        settings = self.settings
        embedder, search = upstreams.connect(settings)
        self._upstreams = [embedder, search]
        if settings.redis_url:
            self._redis = self._connect_redis(settings.redis_url)
        self._state_redis = self._redis
        if settings.state_redis_url:
            self._state_redis = self._connect_redis(settings.state_redis_url)
        if self._state_redis is not None:
            self._checking = asyncio.create_task(warn_if_evicting(self._state_redis))

        def cache_for(namespace: str) -> EmbeddingCache:
            return EmbeddingCache(self._redis, namespace, settings.cache_ttl_s)

        embedder_client = EmbedderClient(embedder, cache_for)
        search_client = SearchClient(search)
        self._quotas = TenantQuotas(
            self._state_redis,
            search_client,
            settings.tenant_max_documents,
            settings.tenant_max_ingest_bytes_per_day,
            settings.tenant_quotas,
            settings.tenant_count_cache_s,
            interactive_jobs=settings.tenant_interactive_jobs,
            max_running_jobs=settings.tenant_max_running_jobs,
            max_collections=settings.tenant_max_collections,
        )
        document_limits = DocumentLimits(settings.max_documents_per_request, settings.max_text_bytes)
        search_limits = SearchLimits(
            max_query_bytes=settings.max_text_bytes,
            max_top_k=settings.max_top_k,
            default_top_k=settings.default_top_k,
            max_searches_per_batch=settings.max_searches_per_batch,
        )
        self._core.set(
            ApiCore(
                Catalog(search_client, embedder_client, self._quotas),
                Documents(search_client, embedder_client, self._quotas, document_limits),
                Searches(search_client, embedder_client, search_limits),
                RequestKeys(self._state_redis, settings.request_key_ttl_s),
            )
        )
        self._open_gate()
        if settings.jobs_database_url:
            # With auth off the jobs database is not required to start: ingestion answers
            # UNAVAILABLE until it is reached, and everything else works meanwhile. With auth on
            # nothing works without it (keys live there), so readiness waits for it.
            self._opening = asyncio.create_task(self._open_ingest(search_client, embedder_client))
            if settings.auth_enabled:
                await self._opening

    def _connect_redis(self, url: str) -> redis.Redis:
        timeout_s = self.settings.cache_timeout_s
        return redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # One quick retry (a pooled connection gone stale after a Redis restart), then the
            # caller's fallback: redis-py's default of 10 backed-off retries would turn a Redis
            # outage into seconds of delay on every call.
            retry=Retry(NoBackoff(), 1),
        )

    def _open_gate(self) -> None:
        settings = self.settings
        if settings.auth_enabled:
            if not settings.jobs_database_url:
                raise RuntimeError(
                    "auth needs the jobs database, where API keys are kept: set MESHSEARCH_API_JOBS_DATABASE_URL, "
                    "or turn auth off with MESHSEARCH_API_AUTH_ENABLED=false"
                )
            self._authenticator = Authenticator(
                self._keys,
                settings.auth_cache_ttl_s,
                settings.bootstrap_key.get_secret_value(),
                max_waiting_verifications=settings.auth_max_waiting_verifications,
                key_failures=FailureCounter(settings.auth_max_failures_per_key, settings.auth_failure_window_s),
            )
        else:
            log.warning(
                "auth is OFF: every caller acts as tenant 'default' with every role and no rate limit; "
                "set MESHSEARCH_API_AUTH_ENABLED=true anywhere but a trusted local machine"
            )
        limiter = RateLimiter(self._state_redis, settings.rate_limit_burst_s, settings.rate_limit_fallback_s)
        self._gate.set(
            Gate(
                self._authenticator,
                limiter,
                settings.rate_limit_read_per_s,
                settings.rate_limit_write_per_s,
                settings.key_rate_bounds(),
            )
        )

    async def _open_ingest(self, search: SearchClient, embedder: EmbedderClient) -> None:
        settings = self.settings
        while True:
            try:
                pool = await open_pool(settings.jobs_database_url, settings.jobs_pool_size, timeout_s=5)
                break
            except Exception as exc:  # noqa: BLE001 (retried until the database answers)
                log.warning("jobs database not reachable yet; retrying", extra={"error": str(exc)})
                await asyncio.sleep(2)
        self._closers.append(pool.close)
        app = queue.create_app(settings.jobs_database_url, pool_size=2)
        await app.open_async()
        self._closers.append(app.close_async)
        store = JobStore(pool, settings.ingest_batch_documents, settings.ingest_batch_bytes)
        self._ingest.set(
            Ingest(
                store,
                app,
                search,
                embedder,
                settings.max_documents_per_request,
                settings.max_text_bytes,
                self._quotas,
                settings.tenant_batches_in_flight,
            )
        )
        key_store = KeyStore(pool)
        self._keys.set(key_store)
        self._key_admin.set(KeyAdmin(key_store, self._authenticator, settings.key_rate_bounds()))
        log.info("bulk ingestion ready")

    async def stop(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        for close in reversed(self._closers):
            await close()
        for upstream in self._upstreams:
            await upstream.close()
        if self._checking is not None:
            self._checking.cancel()
        for client in {id(c): c for c in (self._redis, self._state_redis) if c is not None}.values():
            await client.aclose()


def create_app() -> ApiApp:
    return ApiApp(ApiSettings())
