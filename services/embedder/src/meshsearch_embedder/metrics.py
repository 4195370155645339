"""Prometheus metrics of the embedder's batching pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram, Info

if TYPE_CHECKING:
    from meshsearch_embedder.selection import Selection

QUEUE_SIZE = Gauge("meshsearch_embedder_queue_size", "Texts waiting for a batch.")
QUEUE_SECONDS = Histogram(
    "meshsearch_embedder_queue_seconds",
    "Time each text waited between admission and the start of its forward pass: the autoscaling signal.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
BACKLOG_SECONDS = Gauge(
    "meshsearch_embedder_backlog_seconds",
    "Estimated time to serve every admitted text at the measured throughput.",
)
BATCH_SIZE = Histogram(
    "meshsearch_embedder_batch_size", "Texts per forward pass.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_TOKENS = Histogram(
    "meshsearch_embedder_batch_tokens",
    "Padded tokens (rows x longest row) per forward pass.",
    buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768),
)
PADDING_EFFICIENCY = Histogram(
    "meshsearch_embedder_padding_efficiency",
    "Real tokens / padded tokens per forward pass (1.0 = no padding).",
    buckets=(0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
TOKENIZE_SECONDS = Histogram(
    "meshsearch_embedder_tokenize_seconds",
    "Tokenization time per request: Embed's, and Tokenize's counting and chunking.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
INFERENCE_SECONDS = Histogram(
    "meshsearch_embedder_inference_seconds",
    "Forward-pass time per batch.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REJECTIONS = Counter("meshsearch_embedder_rejections_total", "Texts or requests refused, by reason.", ["reason"])
BACKEND = Info("meshsearch_embedder_backend", "The backend this replica runs, what was asked for and why.")
CALIBRATION_TEXTS_PER_SECOND = Gauge(
    "meshsearch_embedder_calibration_texts_per_second",
    "Throughput the auto backend measured for each candidate at its calibration, by text length.",
    ["backend", "length"],
)


def report_backend(selection: Selection) -> None:
    BACKEND.info(
        {
            "backend": selection.backend,
            "requested": selection.requested,
            "reason": selection.reason,
            "cached": str(selection.cached).lower(),
        }
    )
    for candidate in selection.candidates:
        CALIBRATION_TEXTS_PER_SECOND.labels(candidate.backend, "short").set(candidate.short_per_s)
        CALIBRATION_TEXTS_PER_SECOND.labels(candidate.backend, "long").set(candidate.long_per_s)
