"""Unit tests of the parts of bulk ingestion that need no server: batching, retry decisions,
and reading documents from files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest
from google.protobuf import json_format
from procrastinate.jobs import Job as QueuedJob

from meshsearch_api.ingest.batch_runner import BatchRetryPolicy, RetryBatch
from meshsearch_api.ingest.index_leases import IndexLeases
from meshsearch_api.ingest.queue import BatchRetry
from meshsearch_api.ingest.store import batch_receipt, batches_of, job_receipt_prefix
from meshsearch_cli.sources import Fields, Source, SourceError
from meshsearch_common.errors import InvalidArgument, Unavailable


def test_batches_are_bounded_by_documents_and_bytes() -> None:
    assert batches_of([10] * 5, max_documents=2, max_bytes=1000) == [[0, 1], [2, 3], [4]]
    assert batches_of([600, 600, 100, 100, 5000, 1], max_documents=10, max_bytes=1000) == [
        [0],
        [1, 2, 3],
        [4],  # larger than a batch: alone
        [5],
    ]
    assert batches_of([], 10, 10) == []


def test_backoff_grows_to_its_ceiling_with_jitter() -> None:
    policy = BatchRetryPolicy(max_attempts=8, initial_backoff_s=1, max_backoff_s=10)
    for attempts, ceiling in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (9, 10)):
        delays = {policy.backoff_s(attempts) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 1  # jittered


def _queued() -> QueuedJob:
    return QueuedJob(id=1, queue="q", lock=None, queueing_lock=None, task_name="t", task_kwargs={})


def test_tasks_are_retried_when_their_batch_or_the_database_asks() -> None:
    strategy = BatchRetry()
    decision = strategy.get_retry_decision(exception=RetryBatch(3.0, "busy"), job=_queued())
    assert decision is not None and decision.retry_at is not None
    assert strategy.get_retry_decision(exception=psycopg.OperationalError("gone"), job=_queued()) is not None
    assert strategy.get_retry_decision(exception=Unavailable("jobs database down"), job=_queued()) is not None
    # The batch records its own failures (dead letters): anything else is not the queue's to retry.
    assert strategy.get_retry_decision(exception=InvalidArgument("bad"), job=_queued()) is None
    assert strategy.get_retry_decision(exception=RuntimeError("bug"), job=_queued()) is None


def test_receipts_name_their_job_and_batch() -> None:
    assert batch_receipt("abc", 7).startswith(job_receipt_prefix("abc"))
    assert batch_receipt("abc", 7) != batch_receipt("abc", 70)
    assert not batch_receipt("abc", 7).startswith(job_receipt_prefix("ab"))


def test_jsonl_reads_beir_fields_title_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "1", "title": "Mice", "text": "Mice sleep.", "metadata": {"year": 2001}},
        {"id": "2", "text": "No title.", "source": "lab"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    documents = list(Source(str(path)))
    assert [(d.id, d.text) for d in documents] == [("1", "Mice Mice sleep."), ("2", "No title.")]
    assert json_format.MessageToDict(documents[0].metadata) == {"year": 2001, "title": "Mice"}
    assert json_format.MessageToDict(documents[1].metadata) == {"source": "lab"}
    assert Source(str(path)).count() == 2


def test_csv_and_custom_fields(tmp_path: Path) -> None:
    path = tmp_path / "docs.csv"
    path.write_text("key,body,lang\nk1,first body,en\nk2,second body,fr\n")
    documents = list(Source(str(path), Fields(id="key", text="body")))
    assert [(d.id, d.text, json_format.MessageToDict(d.metadata)) for d in documents] == [
        ("k1", "first body", {"lang": "en"}),
        ("k2", "second body", {"lang": "fr"}),
    ]


def test_a_directory_of_text_files(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# A\nalpha")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("beta")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    documents = list(Source(str(tmp_path)))
    assert [(d.id, d.text) for d in documents] == [("a.md", "# A\nalpha"), ("sub/b.txt", "beta")]
    assert Source(str(tmp_path)).count() == 2


def test_a_directory_is_read_without_following_links_out_of_it(tmp_path: Path) -> None:
    corpus, outside = tmp_path / "corpus", tmp_path / "private"
    corpus.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("a private key")
    (outside / "notes").mkdir()
    (outside / "notes" / "more.md").write_text("private notes")
    (corpus / "public.txt").write_text("public text")
    (corpus / "alias.txt").symlink_to(corpus / "public.txt")  # a link within the corpus is read
    (corpus / "leak.txt").symlink_to(outside / "secret.txt")
    (corpus / "leaks").symlink_to(outside / "notes", target_is_directory=True)
    documents = {d.id: d.text for d in Source(str(corpus))}
    assert documents == {"alias.txt": "public text", "public.txt": "public text"}
    assert Source(str(corpus)).count() == 2


def test_bad_input_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "text": "fine"}\nnot json\n')
    with pytest.raises(SourceError, match="line 2: not JSON"):
        list(Source(str(path)))
    path.write_text('{"id": "1"}\n')
    with pytest.raises(SourceError, match="line 1: no 'text'"):
        list(Source(str(path)))
    with pytest.raises(FileNotFoundError):
        Source(str(tmp_path / "missing.jsonl")).check()


class _SearchLeases:
    """Records the DeferIndex calls of IndexLeases; grants while `empty`."""

    def __init__(self, empty: bool) -> None:
        self.empty = empty
        self.calls: list[str] = []

    async def defer_index(self, collection: str, lease_s: float) -> bool:
        self.calls.append(f"defer {collection} {lease_s:g}")
        await asyncio.sleep(0.01)  # concurrent batches overlap here
        return self.empty


async def test_index_leases_are_asked_once_renewed_when_due_and_ended_with_the_job() -> None:
    search = _SearchLeases(empty=True)
    now = [1000.0]
    leases = IndexLeases(search, lease_s=300, enabled=True, clock=lambda: now[0])  # type: ignore[arg-type]
    await asyncio.gather(*(leases.hold("job1", "docs") for _ in range(4)))  # a worker's concurrent batches
    assert search.calls == ["defer docs 300"]
    now[0] += 99  # within a third of the lease: nothing to do
    await leases.hold("job1", "docs")
    now[0] += 2
    await leases.hold("job1", "docs")
    assert search.calls == ["defer docs 300"] * 2
    leases.forget("job1")  # the job ended: a job of that id would ask again
    await leases.hold("job1", "docs")
    assert search.calls == ["defer docs 300"] * 3


async def test_a_collection_holding_points_is_not_asked_again_and_deferral_can_be_off() -> None:
    search = _SearchLeases(empty=False)
    leases = IndexLeases(search, lease_s=300, enabled=True)  # type: ignore[arg-type]
    for _ in range(3):
        await leases.hold("job2", "full")
    assert search.calls == ["defer full 300"]

    off = _SearchLeases(empty=True)
    disabled = IndexLeases(off, lease_s=300, enabled=False)  # type: ignore[arg-type]
    await disabled.hold("job3", "docs")
    assert off.calls == []
