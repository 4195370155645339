"""Builds the Grafana dashboard of a meshsearch deployment (k8s/base/dashboards/meshsearch.json)
with the Grafana Foundation SDK, whose models follow Grafana's own dashboard schema.

Run `make dashboard` after changing it; tests/unit/test_dashboard.py fails when the committed
JSON differs from what this script builds, when it no longer loads into the SDK's models, or
when a query names a metric the services do not export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DashboardCursorSync, DataSourceRef

OUTPUT = Path(__file__).parents[2] / "k8s" / "base" / "dashboards" / "meshsearch.json"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"


def _quantile(q: float, histogram: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({histogram}_bucket{RATE})))"


def _panel(title: str, unit: str, description: str, *queries: tuple[str, str]) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).description(description).datasource(DATASOURCE).height(8).span(8)
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref))
    return panel


def build() -> dict[str, object]:
    board = (
        dashboard.Dashboard("meshsearch")
        .uid("meshsearch-overview")
        .description("Requests, latency, the embedder's queue, the mesh's breakers, ingestion and limits.")
        .tags(["meshsearch"])
        .refresh("30s")
        .time("now-1h", "now")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_row(dashboard.Row("Requests"))
        .with_panel(
            _panel(
                "RPCs by status",
                "reqps",
                "Completed RPCs per second on every service, by gRPC status.",
                (f"sum by (code) (rate(meshsearch_rpc_handled_total{RATE}))", "{{code}}"),
            )
        )
        .with_panel(
            _panel(
                "Failed RPCs (server's fault)",
                "percentunit",
                "Share of RPCs ending INTERNAL, UNKNOWN, UNAVAILABLE or DEADLINE_EXCEEDED.",
                (
                    f'sum(rate(meshsearch_rpc_handled_total{{code=~"INTERNAL|UNKNOWN|UNAVAILABLE|DEADLINE_EXCEEDED"}}{RATE}))'
                    f" / sum(rate(meshsearch_rpc_handled_total{RATE}))",
                    "failed",
                ),
            )
        )
        .with_panel(
            _panel(
                "Latency p99 by method",
                "s",
                "Server-side latency of each RPC method, 99th percentile.",
                (_quantile(0.99, "meshsearch_rpc_duration_seconds", "method"), "{{method}}"),
            )
        )
        .with_row(dashboard.Row("Embedder"))
        .with_panel(
            _panel(
                "Queue time p90",
                "s",
                "How long texts wait for a forward pass: the embedder's autoscaling signal (k8s HPA).",
                (_quantile(0.9, "meshsearch_embedder_queue_seconds"), "p90"),
                ("max(meshsearch_embedder_backlog_seconds)", "backlog (worst replica)"),
            )
        )
        .with_panel(
            _panel(
                "Batches",
                "none",
                "Texts per forward pass (median) and the share of real tokens in them.",
                (_quantile(0.5, "meshsearch_embedder_batch_size"), "batch size p50"),
                (_quantile(0.5, "meshsearch_embedder_padding_efficiency"), "padding efficiency p50"),
            )
        )
        .with_panel(
            _panel(
                "Refused texts",
                "reqps",
                "Texts or requests the embedder refused (RESOURCE_EXHAUSTED), by reason.",
                (f"sum by (reason) (rate(meshsearch_embedder_rejections_total{RATE}))", "{{reason}}"),
            )
        )
        .with_row(dashboard.Row("Mesh"))
        .with_panel(
            _panel(
                "Circuit breakers",
                "none",
                "Per upstream: 0 closed, 1 half-open, 2 open (calls fail fast).",
                ("max by (upstream) (meshsearch_upstream_breaker_state)", "{{upstream}}"),
            )
        )
        .with_panel(
            _panel(
                "Upstream calls",
                "reqps",
                "Calls between services, by upstream and outcome.",
                (f"sum by (upstream, code) (rate(meshsearch_upstream_calls_total{RATE}))", "{{upstream}} {{code}}"),
            )
        )
        .with_panel(
            _panel(
                "Degraded searches",
                "reqps",
                "Searches answered by keyword search because the embedder could not.",
                (f"sum by (cause) (rate(meshsearch_api_degraded_searches_total{RATE}))", "{{cause}}"),
            )
        )
        .with_row(dashboard.Row("Ingestion"))
        .with_panel(
            _panel(
                "Documents",
                "reqps",
                "Documents uploaded to jobs, and stored or dead-lettered by workers.",
                (f"sum(rate(meshsearch_ingest_uploaded_documents_total{RATE}))", "uploaded"),
                (f"sum by (outcome) (rate(meshsearch_ingest_documents_total{RATE}))", "{{outcome}}"),
            )
        )
        .with_panel(
            _panel(
                "Batch time p90",
                "s",
                "Time for a worker to embed and store one batch.",
                (_quantile(0.9, "meshsearch_ingest_batch_seconds"), "p90"),
            )
        )
        .with_panel(
            _panel(
                "Recovered work",
                "reqps",
                "Tasks of dead workers retried and batches queued again by the reconciler.",
                (f"sum(rate(meshsearch_ingest_stalled_tasks_total{RATE}))", "stalled tasks retried"),
                (f"sum(rate(meshsearch_ingest_requeued_batches_total{RATE}))", "batches requeued"),
            )
        )
        .with_row(dashboard.Row("Keys, limits and cache"))
        .with_panel(
            _panel(
                "Rate-limit decisions",
                "reqps",
                "Per class and outcome; the fallback line is non-zero while Redis fails.",
                (f"sum by (kind, outcome) (rate(meshsearch_api_rate_limit_total{RATE}))", "{{kind}} {{outcome}}"),
                (f"sum(rate(meshsearch_api_rate_limit_fallback_total{RATE}))", "local fallback"),
            )
        )
        .with_panel(
            _panel(
                "Authentication",
                "reqps",
                "Credentials checked, by outcome; and writes refused by tenant quotas.",
                (f"sum by (outcome) (rate(meshsearch_api_authentications_total{RATE}))", "{{outcome}}"),
                (f"sum by (quota) (rate(meshsearch_api_quota_refusals_total{RATE}))", "quota {{quota}}"),
            )
        )
        .with_panel(
            _panel(
                "Embedding cache hit ratio",
                "percentunit",
                "Query embeddings served from Redis.",
                (
                    f'sum(rate(meshsearch_api_embedding_cache_total{{outcome="hit"}}{RATE}))'
                    f" / sum(rate(meshsearch_api_embedding_cache_total{RATE}))",
                    "hit ratio",
                ),
            )
        )
    )
    encoded: dict[str, object] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return encoded


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}", file=sys.stderr)
