"""The two upstreams of whoever embeds and stores documents (the api and the ingest workers),
connected through the common client layer with the policies of their settings."""

from __future__ import annotations

from meshsearch.embedder.v1 import embedder_pb2
from meshsearch.search.v1 import search_pb2
from meshsearch_api.settings import UpstreamSettings
from meshsearch_common.client import Upstream, connect_upstream


def connect(settings: UpstreamSettings) -> tuple[Upstream, Upstream]:
    """(embedder, search)."""
    embedder = connect_upstream(
        "embedder",
        settings.embedder_target,
        [embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"]],
        settings.embedder_policy,
        client_tls=settings.upstream_tls,
        caller_token=settings.caller_token.get_secret_value(),
    )
    search = connect_upstream(
        "search",
        settings.search_target,
        [search_pb2.DESCRIPTOR.services_by_name["VectorStoreService"]],
        settings.search_policy,
        client_tls=settings.upstream_tls,
        caller_token=settings.caller_token.get_secret_value(),
    )
    return embedder, search
