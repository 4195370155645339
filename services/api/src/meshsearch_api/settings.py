"""API settings (environment prefix MESHSEARCH_API_).

Upstream policies are nested: MESHSEARCH_API_EMBEDDER_POLICY__TIMEOUT_S=2 sets the embedder
call deadline, MESHSEARCH_API_SEARCH_POLICY__BREAKER_FAIL_MAX=3 the search breaker, and so on.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshsearch_common.settings import ServiceSettings, UpstreamPolicy


class ApiSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="MESHSEARCH_API_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9091, ge=0, le=65535)
    embedder_target: str = Field(
        "127.0.0.1:50052", description="gRPC target of the embedder (dns:///name:port for replicas)."
    )
    search_target: str = Field("127.0.0.1:50053", description="gRPC target of the search service.")
    embedder_policy: UpstreamPolicy = Field(default_factory=UpstreamPolicy)
    search_policy: UpstreamPolicy = Field(default_factory=UpstreamPolicy)
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Embedding cache; empty disables it.")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Lifetime of a cached embedding.")
    request_key_ttl_s: int = Field(
        24 * 3600, ge=1, description="How long the answer of a write with a request_key is kept for its retries."
    )
    cache_timeout_s: float = Field(0.2, gt=0, description="Redis call timeout; on failure the cache is skipped.")
    max_documents_per_request: int = Field(256, ge=1)
    max_text_bytes: int = Field(65_536, ge=1, description="Largest document or query text, in UTF-8 bytes.")
    max_top_k: int = Field(100, ge=1)
    default_top_k: int = Field(10, ge=1)
    max_searches_per_batch: int = Field(32, ge=1, description="Most searches in one SearchBatch call.")
