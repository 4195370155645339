"""Search service settings (environment prefix MESHSEARCH_SEARCH_)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from meshsearch_common.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSEARCH_SEARCH_", frozen=True, extra="ignore")

    port: int = Field(50053, ge=0, le=65535)
    metrics_port: int = Field(9093, ge=0, le=65535)
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres", description="PostgreSQL (with pgvector) connection URL."
    )
    read_database_url: str = Field("", description="Optional read replica for Query, Get and Scroll.")
    shard_urls: str = Field(
        "",
        description="Comma-separated PostgreSQL (with pgvector) URLs of the shard servers a collection created "
        "with shards > 1 spreads over (shard i is the i-th URL; append only: reordering or removing one "
        "strands its points). database_url is then the coordinator: it holds each sharded collection's "
        "partitioned table and reaches the shards with postgres_fdw. See docs/scaling.md.",
    )
    shard_connect_timeout_s: int = Field(
        5,
        ge=1,
        description="How long the coordinator (postgres_fdw) waits to connect to a shard before the call fails.",
    )
    shard_ef_search: int = Field(
        0,
        ge=0,
        description="hnsw.ef_search of the shards' default sessions (postgres_fdw carries no settings): a "
        "sharded search that asks for no more uses it, one asking more an ef_search tier; 0: default_ef_search. "
        "See docs/scaling.md.",
    )
    shard_ef_search_tiers: str = Field(
        "100,400,1000",
        description="Comma-separated hnsw.ef_search values, besides shard_ef_search, that a sharded search may "
        "run its shards with: a query asking for more than shard_ef_search gets the smallest of these at "
        "least as large (the largest, if none is). Each is a foreign server per shard, so a coordinator "
        "connection may hold one shard session per value used; empty: every sharded search uses "
        "shard_ef_search. See docs/scaling.md.",
    )
    pool_min_size: int = Field(2, ge=1)
    pool_max_size: int = Field(10, ge=1)
    pool_timeout_s: float = Field(
        5.0,
        gt=0,
        description="Longest wait for a free connection (also bounded by the call's deadline); then "
        "RESOURCE_EXHAUSTED if every connection is busy, UNAVAILABLE if PostgreSQL cannot be reached.",
    )
    pool_max_waiting: int = Field(
        256, ge=0, description="Calls that may queue for a connection; past it RESOURCE_EXHAUSTED at once (0: no cap)."
    )
    startup_timeout_s: float = Field(60.0, gt=0, description="How long start-up waits for PostgreSQL.")
    default_ef_search: int = Field(40, ge=1, description="hnsw.ef_search when a query does not set one.")
    exact_filter_max_rows: int = Field(
        2000, ge=0, description="Filters matching at most this many points use exact search."
    )
    max_scan_tuples: int = Field(40_000, ge=1, description="hnsw.max_scan_tuples for iterative filtered scans.")
    max_k: int = Field(1000, ge=1)
    max_ef_search: int = Field(1000, ge=1)
    max_batch_points: int = Field(1000, ge=1, description="Most points in one Upsert, Get or Delete; largest page.")
    max_batch_queries: int = Field(64, ge=1, description="Most queries in one QueryBatch.")
    max_chunks: int = Field(4096, ge=1, description="Most chunks of one document.")
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1, description="Largest request message.")
    max_text_bytes: int = Field(1_048_576, ge=1, description="Largest stored document text.")
    max_metadata_bytes: int = Field(65_536, ge=1, description="Largest metadata object, as JSON.")
    max_dimension: int = Field(4000, ge=1, le=16000, description="Largest collection dimension.")
    max_filter_depth: int = Field(4, ge=1)
    max_filter_conditions: int = Field(64, ge=1)
    max_filter_in_values: int = Field(256, ge=1)
    bulk_max_statement_s: float = Field(3600.0, gt=0, description="Statement timeout of a bulk load without deadline.")
    index_build_memory: str = Field("1GB", description="maintenance_work_mem for HNSW builds.")
    index_build_workers: int = Field(2, ge=0, description="max_parallel_maintenance_workers for HNSW builds.")
    index_sweep_interval_s: float = Field(
        30.0,
        gt=0,
        description="How often HNSW indexes left unbuilt are looked for and built: deferrals whose lease ran out "
        "(their writer died or stopped renewing), and builds a crash interrupted.",
    )

    @field_validator("shard_ef_search_tiers")
    @classmethod
    def _ef_search_tiers_are_counts(cls, value: str) -> str:
        _ef_search_values(value)
        return value

    @property
    def ef_search_tiers(self) -> tuple[int, ...]:
        """shard_ef_search_tiers as sorted, distinct numbers."""
        return tuple(sorted(set(_ef_search_values(self.shard_ef_search_tiers))))


def _ef_search_values(text: str) -> list[int]:
    """The numbers of a comma-separated list of hnsw.ef_search values; ValueError names a wrong one."""
    values = []
    for part in filter(None, (part.strip() for part in text.split(","))):
        if not part.isdigit() or not 1 <= int(part) <= 1000:
            raise ValueError(
                f"{part!r} is not an hnsw.ef_search value (a whole number from 1 to 1000, pgvector's range)"
            )
        values.append(int(part))
    return values
