"""Reading a running service's Prometheus metrics, as a scraper would."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def sample(metrics_port: int, name: str, **labels: str) -> float:
    """The value of sample `name` with exactly `labels` (0 when it has not been exported yet)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    for family in text_string_to_metric_families(body):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def embed_calls(metrics_port: int) -> int:
    """Embed calls an embedder answered OK."""
    method = "/meshsearch.embedder.v1.EmbedderService/Embed"
    return int(sample(metrics_port, "meshsearch_rpc_handled_total", code="OK", method=method))
