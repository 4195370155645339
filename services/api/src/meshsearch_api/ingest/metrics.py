"""Prometheus metrics of ingestion (api and workers)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

BATCHES = Counter(
    "meshsearch_ingest_batches_total",
    "Ingest batches handled by workers, by outcome (stored, already_stored, retried, deferred_for_load, "
    "dead, job_failed, skipped).",
    ["outcome"],
)
DOCUMENTS = Counter("meshsearch_ingest_documents_total", "Documents stored or dead-lettered by workers.", ["outcome"])
UPLOADED = Counter("meshsearch_ingest_uploaded_documents_total", "Documents acknowledged by StartIngest uploads.")
RECONCILED = Counter(
    "meshsearch_ingest_requeued_batches_total",
    "Batches queued again by the reconciler because their task died.",
)
TIDIED_LATE = Counter(
    "meshsearch_ingest_tidied_late_jobs_total",
    "Ended jobs tidied by the reconciler (staged copies and receipts dropped, index built) because "
    "nobody did when they ended: a killed worker, an outage, or an abandoned upload.",
)
PURGED = Counter(
    "meshsearch_retention_deleted_total",
    "Ended jobs and revoked or expired API keys deleted by the reconciler after their retention, by kind.",
    ["kind"],
)
ABANDONED = Counter(
    "meshsearch_ingest_abandoned_uploads_total",
    "Jobs failed by the reconciler because their upload stopped without completing (see ABANDON_UPLOAD_AFTER_S).",
)
TOPPED_UP = Counter(
    "meshsearch_ingest_topped_up_tenants_total",
    "Tenants whose next batches the reconciler queued because no process gave them their turn.",
)
STALLED = Counter("meshsearch_ingest_stalled_tasks_total", "Tasks of dead workers retried by the reconciler.")
BATCH_SECONDS = Histogram(
    "meshsearch_ingest_batch_seconds",
    "Time to process one batch (embed and store).",
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
)
