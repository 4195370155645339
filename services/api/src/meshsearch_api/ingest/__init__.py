"""Durable bulk ingestion: uploads staged in PostgreSQL, batches run by procrastinate workers,
stored exactly once through the search service's receipts. See docs/ingestion.md."""
