"""Search service settings (environment prefix MESHSEARCH_SEARCH_)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from meshsearch_common.settings import ServiceSettings


class SearchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="MESHSEARCH_SEARCH_", frozen=True, extra="ignore")

    port: int = Field(50053, ge=0, le=65535)
    metrics_port: int = Field(9093, ge=0, le=65535)
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/postgres", description="PostgreSQL (with pgvector) connection URL."
    )
    pool_min_size: int = Field(2, ge=1)
    pool_max_size: int = Field(10, ge=1)
    pool_timeout_s: float = Field(5.0, gt=0, description="Wait for a free connection before UNAVAILABLE.")
    default_ef_search: int = Field(40, ge=1, description="hnsw.ef_search when a query does not set one.")
    max_k: int = Field(1000, ge=1)
    max_ef_search: int = Field(1000, ge=1)
    max_batch_points: int = Field(1000, ge=1, description="Most points in one Upsert, Get or Delete.")
    max_text_bytes: int = Field(1_048_576, ge=1, description="Largest stored document text.")
    max_metadata_bytes: int = Field(65_536, ge=1, description="Largest metadata object, as JSON.")
    max_dimension: int = Field(
        4000, ge=1, le=16000, description="Largest collection dimension (HNSW limit 4000 for vector, 4000 for halfvec)."
    )
