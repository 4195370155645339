"""Settings of the api and of the ingest workers (environment prefixes MESHSEARCH_API_ and
MESHSEARCH_WORKER_).

Upstream policies are nested: MESHSEARCH_API_EMBEDDER_POLICY__TIMEOUT_S=2 sets the embedder
call deadline, MESHSEARCH_API_SEARCH_POLICY__BREAKER_FAIL_MAX=3 the search breaker, and so on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from meshsearch_api.auth.key_rates import KeyRateBounds
from meshsearch_common import names
from meshsearch_common.settings import ServiceSettings, UpstreamPolicy
from meshsearch_common.tls import ClientTls


class TenantQuota(BaseModel):
    """One tenant's quotas, replacing the defaults field by field (a field left out keeps the
    default; 0 means no quota)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_documents: int | None = Field(None, ge=0)
    max_ingest_bytes_per_day: int | None = Field(None, ge=0)
    max_read_per_s: float | None = Field(None, gt=0)
    max_write_per_s: float | None = Field(None, gt=0)
    interactive_jobs: bool | None = None
    max_running_jobs: int | None = Field(None, ge=0)
    max_collections: int | None = Field(None, ge=0)


class UpstreamSettings(ServiceSettings):
    """Where the embedder and the search service are, and how to call them: the same for the
    api and the workers, which both embed and store documents."""

    embedder_target: str = Field(
        "127.0.0.1:50052", description="gRPC target of the embedder (dns:///name:port for replicas)."
    )
    search_target: str = Field("127.0.0.1:50053", description="gRPC target of the search service.")
    embedder_policy: UpstreamPolicy = Field(default_factory=UpstreamPolicy)
    search_policy: UpstreamPolicy = Field(default_factory=UpstreamPolicy)
    jobs_database_url: str = Field(
        "", description="PostgreSQL of ingest jobs and their queue; empty disables bulk ingestion."
    )
    max_text_bytes: int = Field(65_536, ge=1, description="Largest document or query text, in UTF-8 bytes.")
    upstream_tls: ClientTls = Field(default_factory=ClientTls)
    caller_token: SecretStr = Field(
        SecretStr(""),
        description="Secret sent with every call to the embedder and the search service, when they require "
        "one (their CALLERS__TOKEN).",
    )


def tenant_batches_in_flight_field() -> Any:
    """One definition for the api (which queues an upload's first batches) and the workers
    (which queue the next as batches end): they must agree."""
    return Field(
        4,
        ge=1,
        le=10_000,
        description="Batches of one tenant queued or running at once; the next are queued as those end, so "
        "tenants take turns within a priority (another tenant's first batch waits behind at most this many of "
        "each busy tenant's). A tenant alone uses at most this many worker slots: give it the workers' total "
        "concurrency for the fastest single bulk load, less to share more evenly.",
    )


class ApiSettings(UpstreamSettings):
    model_config = SettingsConfigDict(
        env_prefix="MESHSEARCH_API_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9091, ge=0, le=65535)
    tenant_batches_in_flight: int = tenant_batches_in_flight_field()
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Embedding cache; empty disables it.")
    state_redis_url: str = Field(
        "",
        description=(
            "Rate-limit buckets, quota counters and request keys: a Redis whose maxmemory-policy is "
            "noeviction, so pressure on the embedding cache cannot evict them. Empty: REDIS_URL's Redis "
            "(the api warns at start when that one may evict)."
        ),
    )
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Lifetime of a cached embedding.")
    request_key_ttl_s: int = Field(
        24 * 3600, ge=1, description="How long the answer of a write with a request_key is kept for its retries."
    )
    cache_timeout_s: float = Field(0.2, gt=0, description="Redis call timeout; on failure the cache is skipped.")
    max_documents_per_request: int = Field(256, ge=1)
    max_top_k: int = Field(100, ge=1)
    default_top_k: int = Field(10, ge=1)
    max_searches_per_batch: int = Field(32, ge=1, description="Most searches in one SearchBatch call.")
    max_request_bytes: int = Field(
        4 * 1024 * 1024,
        ge=64 * 1024,
        description="Largest request message of any method (an IndexDocuments call, one message of an upload): "
        "what bounds the memory one call may make the api hold. Bigger batches must be split.",
    )
    max_metadata_bytes: int = Field(
        65_536,
        ge=1,
        description="Largest metadata object of a document (or filter of a search), as JSON: with max_text_bytes "
        "and max_documents_per_request it sizes each method's request limit. The search service enforces "
        "its own (MESHSEARCH_SEARCH_MAX_METADATA_BYTES); keep them equal.",
    )
    ingest_batch_documents: int = Field(
        128, ge=1, le=256, description="Most documents per batch of an ingest job (one worker task each)."
    )
    ingest_batch_bytes: int = Field(
        65_536, ge=1, description="Most text per batch, in UTF-8 bytes (long documents make smaller batches)."
    )
    jobs_pool_size: int = Field(8, ge=2, description="Connections to the jobs database.")
    auth_enabled: bool = Field(
        True,
        description="Require an API key on every public call (keys live in the jobs database). `meshsearch up` "
        "turns it off, with a warning: every caller then acts as tenant 'default' with every role, unlimited.",
    )
    bootstrap_key: SecretStr = Field(
        SecretStr(""),
        description="A secret of at least 32 characters that may manage the API keys of every tenant (and reach "
        "no data): how the first admin key is made. Empty: none.",
    )
    auth_cache_ttl_s: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How long a verified key is trusted without a look at the database: the "
        "longest a revoked key keeps working on a replica.",
    )
    auth_max_failures_per_peer: int = Field(
        50,
        ge=0,
        description="Failed authentications from one address, each within auth_failure_window_s of the last, "
        "after which it is refused (RESOURCE_EXHAUSTED) until quiet that long. 0: no limit (behind a proxy "
        "that hides callers' addresses, raise it or turn it off).",
    )
    auth_max_failures_per_key: int = Field(
        10,
        ge=0,
        description="Wrong secrets for one key id after which it is not verified again until quiet for "
        "auth_failure_window_s (it answers INVALID_API_KEY meanwhile). 0: no limit.",
    )
    auth_failure_window_s: float = Field(60.0, gt=0, description="See auth_max_failures_per_peer and _per_key.")
    auth_max_waiting_verifications: int = Field(
        64, ge=1, description="Key verifications (argon2) that may wait for a CPU; more are refused RESOURCE_EXHAUSTED."
    )
    key_max_streams: int = Field(
        8,
        ge=1,
        description="Streams (StartIngest, EstimateIngest, WatchJob) one key may hold open on one api replica.",
    )
    rate_limit_read_per_s: float = Field(100.0, gt=0, description="Reads per second of a key without its own limit.")
    rate_limit_write_per_s: float = Field(20.0, gt=0, description="Writes per second of a key without its own limit.")
    key_max_read_per_s: float = Field(
        1000.0, gt=0, description="The most reads per second a key may be given (per tenant: TENANT_QUOTAS)."
    )
    key_max_write_per_s: float = Field(
        200.0, gt=0, description="The most writes per second a key may be given (per tenant: TENANT_QUOTAS)."
    )
    key_min_rate_per_s: float = Field(0.01, gt=0, description="The least calls per second a key may be given.")
    rate_limit_burst_s: float = Field(
        2.0, gt=0, description="A key may burst this many seconds' worth of calls at once (its bucket's size)."
    )
    rate_limit_fallback_s: float = Field(
        5.0,
        gt=0,
        description="After Redis fails, how long rate limits are kept by this replica alone before "
        "Redis is tried again.",
    )

    @field_validator("bootstrap_key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < 32:
            raise ValueError("must be empty or at least 32 characters (make one with: openssl rand -hex 32)")
        return value

    tenant_max_documents: int = Field(0, ge=0, description="Documents one tenant may store; 0: no quota.")
    tenant_max_ingest_bytes_per_day: int = Field(
        0, ge=0, description="UTF-8 bytes of text one tenant may write per UTC day; 0: no quota."
    )
    tenant_count_cache_s: float = Field(
        2.0,
        ge=0,
        description="How long a tenant's stored document count (for its document quota) is reused before the "
        "search service is asked again; 0 asks on every write.",
    )
    tenant_max_running_jobs: int = Field(
        16,
        ge=0,
        description="Ingest jobs one tenant may run at once (per tenant: TENANT_QUOTAS' max_running_jobs); "
        "StartIngest past it answers RESOURCE_EXHAUSTED (TOO_MANY_JOBS). 0: no limit.",
    )
    tenant_max_collections: int = Field(
        1000,
        ge=0,
        description="Collections one tenant may have (per tenant: TENANT_QUOTAS' max_collections); "
        "CreateCollection past it answers RESOURCE_EXHAUSTED (TOO_MANY_COLLECTIONS). 0: no limit.",
    )
    tenant_interactive_jobs: bool = Field(
        False,
        description="Whether a tenant's jobs may take JOB_PRIORITY_INTERACTIVE, which the queue serves before "
        "every other job: a right to give (TENANT_QUOTAS' interactive_jobs), not one a write key takes.",
    )
    tenant_quotas: dict[str, TenantQuota] = Field(
        default_factory=dict,
        description='Quotas of named tenants, in place of the two defaults above, as JSON: {"team-a": '
        '{"max_documents": 5000000, "max_ingest_bytes_per_day": 0, "interactive_jobs": true}}.',
    )

    @model_validator(mode="after")
    def _default_rates_within_the_key_bounds(self) -> ApiSettings:
        for kind, rate, ceiling in (
            ("READ", self.rate_limit_read_per_s, self.key_max_read_per_s),
            ("WRITE", self.rate_limit_write_per_s, self.key_max_write_per_s),
        ):
            if not self.key_min_rate_per_s <= rate <= ceiling:
                raise ValueError(
                    f"the default {kind.lower()} rate MESHSEARCH_API_RATE_LIMIT_{kind}_PER_S ({rate:g}) must lie "
                    f"between MESHSEARCH_API_KEY_MIN_RATE_PER_S ({self.key_min_rate_per_s:g}) and "
                    f"MESHSEARCH_API_KEY_MAX_{kind}_PER_S ({ceiling:g}): lower it or raise the ceiling"
                )
        return self

    def key_rate_bounds(self) -> KeyRateBounds:
        """The bounds of every key's rates, with the ceilings of named tenants."""
        tenants = {name: (quota.max_read_per_s, quota.max_write_per_s) for name, quota in self.tenant_quotas.items()}
        return KeyRateBounds(self.key_min_rate_per_s, self.key_max_read_per_s, self.key_max_write_per_s, tenants)

    @field_validator("tenant_quotas")
    @classmethod
    def _tenant_names(cls, value: dict[str, TenantQuota]) -> dict[str, TenantQuota]:
        wrong = sorted(tenant for tenant in value if not names.TENANT.match(tenant))
        if wrong:
            raise ValueError(f"invalid tenant name(s) {wrong}: use {names.TENANT_RULE}")
        return value


class WorkerSettings(UpstreamSettings):
    """An ingest worker: runs the batches of ingest jobs (`meshsearch serve worker`)."""

    model_config = SettingsConfigDict(
        env_prefix="MESHSEARCH_WORKER_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    port: int = Field(50054, ge=0, le=65535, description="gRPC port (health and reflection only).")
    metrics_port: int = Field(9094, ge=0, le=65535)
    concurrency: int = Field(4, ge=1, description="Batches one worker runs at once.")
    tenant_batches_in_flight: int = tenant_batches_in_flight_field()
    defer_index: bool = Field(
        True,
        description="A job loading an empty collection holds off its HNSW index and has it built once at the end "
        "(several times less database work; searches of that collection scan exactly until then).",
    )
    index_lease_s: float = Field(
        300.0,
        ge=10,
        le=3600,
        description="Lease of a deferred index, renewed while the job's batches run; if the workers stop, the "
        "search service builds the index when it runs out.",
    )
    batch_deadline_s: float = Field(300.0, gt=0, description="Time one batch may take (embedding and storing).")
    max_attempts: int = Field(8, ge=1, description="Failed attempts before a batch's documents become dead letters.")
    retry_initial_backoff_s: float = Field(1.0, gt=0)
    retry_max_backoff_s: float = Field(60.0, gt=0)
    heartbeat_s: float = Field(5.0, gt=0, description="How often the worker tells the queue it is alive.")
    stalled_after_s: float = Field(
        30.0, gt=0, description="A worker silent this long is dead: its tasks are retried elsewhere."
    )
    reconcile_every_s: int = Field(5, ge=1, le=30, description="Period of the reconciler (a divisor of 60).")
    orphan_after_s: float = Field(
        30.0, gt=0, description="A pending batch untouched this long, and held by no one, is queued again."
    )
    dead_letter_retention_s: float = Field(
        3600.0,
        gt=0,
        description="How long after its job ends a dead letter keeps its text, so that it can be redriven; then "
        "only its id, reason and size remain. A document at fault itself (invalid, repeated id) keeps no text "
        "once its job ends.",
    )
    job_retention_s: float = Field(
        7 * 86_400.0,
        gt=0,
        description="How long an ended job stays (GetJob, ListJobs, its dead letters); then it is deleted with "
        "everything it kept, so that the job tables do not grow for ever.",
    )
    key_retention_s: float = Field(
        30 * 86_400.0,
        gt=0,
        description="How long a revoked or expired API key stays listed (for audit); then it is deleted.",
    )
    abandon_upload_after_s: float = Field(
        86_400.0,
        gt=0,
        description="An upload that has sent nothing for this long, while every batch it sent is processed, is "
        "abandoned: its job fails with the reason (what was stored stays) instead of staying RUNNING forever. "
        "A client resuming after a break shorter than this continues the job.",
    )
