"""The jobs database's own rules, on the real PostgreSQL of the test stack: an upload whose
client went away is ended, but only once nothing it sent is left to process; an ended job that
nobody tidied is tidied by the reconciler, and a redriven job's staged copies are kept; ended
jobs and dead keys go after their retention."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from psycopg_pool import AsyncConnectionPool

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api import upstreams
from meshsearch_api.auth.key_store import KeyStore, StoredKey
from meshsearch_api.domain import Document
from meshsearch_api.ingest.domain import JobState, Priority
from meshsearch_api.ingest.store import JobStore
from meshsearch_api.ingest.tidy import tidy_leftovers
from meshsearch_api.search_client import SearchClient
from meshsearch_api.settings import WorkerSettings
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_common.errors import FailedPrecondition, NotFound

IDLE_S = 3600


async def backdate(pool: AsyncConnectionPool, job_id: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE meshsearch_ingest_jobs SET update_time = clock_timestamp() - interval '2 hours' WHERE id = %s",
            (job_id,),
        )


def no_problem(document: Document) -> str | None:
    return None


async def test_an_upload_that_stops_is_abandoned_once_what_it_sent_is_processed(pool: AsyncConnectionPool) -> None:
    store = JobStore(pool, batch_documents=2)
    silent = await store.create_job("abandoned_upload_test", Priority.BULK)
    await store.stage(silent.id, 0, [Document(f"d{i}", f"text {i}") for i in range(3)], no_problem)
    active = await store.create_job("abandoned_upload_test", Priority.BULK)
    finished = await store.create_job("abandoned_upload_test", Priority.BULK)
    await store.complete_upload(finished.id, 0)
    for job in (silent, finished):
        await backdate(pool, job.id)

    # Its batches are still pending: a worker may yet store them, so the job stays.
    assert silent.id not in await store.abandon_idle_uploads(IDLE_S, 100)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE meshsearch_ingest_batches SET state = 'done' WHERE job_id = %s AND state = 'pending'", (silent.id,)
        )
    await backdate(pool, silent.id)
    abandoned = await store.abandon_idle_uploads(IDLE_S, 100)

    assert silent.id in abandoned and active.id not in abandoned and finished.id not in abandoned
    ended = await store.get_job(silent.id)
    assert ended.state is JobState.FAILED and ended.finish_time is not None
    assert "upload abandoned" in ended.error and f"{IDLE_S} s" in ended.error, ended.error
    assert (await store.get_job(active.id)).state is JobState.RUNNING
    with pytest.raises(FailedPrecondition, match="failed; start a new job"):
        await store.stage(silent.id, 3, [Document("d3", "text 3")], no_problem)
    assert silent.id not in await store.abandon_idle_uploads(IDLE_S, 100)  # once only


@pytest.fixture
async def search(stack: EmbeddedStack) -> AsyncIterator[SearchClient]:
    """A client of the stack's real search service, as a worker has."""
    embedder, upstream = upstreams.connect(
        WorkerSettings(
            embedder_target=f"127.0.0.1:{stack.ports.embedder}",
            search_target=f"127.0.0.1:{stack.ports.search}",
            caller_token=stack.caller_token,
        )
    )
    yield SearchClient(upstream)
    await embedder.close()
    await upstream.close()


async def create_collection(stack: EmbeddedStack) -> str:
    name = f"tidy_test_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as channel:
        await pb_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30
        )
    return name


async def staged_count(pool: AsyncConnectionPool, job_id: str) -> int:
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT count(*) FROM meshsearch_ingest_documents WHERE job_id = %s", (job_id,))
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def end_without_tidying(pool: AsyncConnectionPool, job_id: str, state: str, ended_ago_s: float) -> None:
    """What a worker killed right after storing a job's last batch leaves: every batch done,
    the job ended, its staged copies still there."""
    async with pool.connection() as conn:
        await conn.execute("UPDATE meshsearch_ingest_batches SET state = 'done' WHERE job_id = %s", (job_id,))
        await conn.execute(
            "UPDATE meshsearch_ingest_jobs SET state = %s, "
            "finish_time = clock_timestamp() - make_interval(secs => %s) WHERE id = %s",
            (state, ended_ago_s, job_id),
        )


async def staged_job(store: JobStore, collection: str, documents: int = 3) -> str:
    job = await store.create_job(collection, Priority.BULK)
    await store.stage(job.id, 0, [Document(f"d{i}", f"text {i}") for i in range(documents)], no_problem)
    await store.complete_upload(job.id, documents)
    return job.id


async def test_an_ended_job_nobody_tidied_is_tidied_by_the_reconciler(
    pool: AsyncConnectionPool, stack: EmbeddedStack, search: SearchClient
) -> None:
    store = JobStore(pool, batch_documents=2)
    collection = await create_collection(stack)
    completed = await staged_job(store, collection)
    cancelled_in_deleted_collection = await staged_job(store, "tidy_test_never_created")
    just_ended = await staged_job(store, collection)
    running = await staged_job(store, collection)
    await end_without_tidying(pool, completed, "completed", 120)
    await end_without_tidying(pool, cancelled_in_deleted_collection, "cancelled", 120)
    await end_without_tidying(pool, just_ended, "completed", 0)

    await tidy_leftovers(store, search, 60, 1000)

    # Tidied: the staged copies are gone, and the job is not listed again. A collection the
    # search service does not know (deleted) has no index or receipts left to tidy.
    for job_id in (completed, cancelled_in_deleted_collection):
        assert await staged_count(pool, job_id) == 0
        assert job_id not in {job.id for job in await store.untidy_jobs(60, 1000)}
    # Left to whoever noticed the end (the orphan delay), and never a running job's copies.
    assert await staged_count(pool, just_ended) == 3
    assert just_ended in {job.id for job in await store.untidy_jobs(0, 1000)}
    assert await staged_count(pool, running) == 3
    await store.forget_staged(running)
    assert await staged_count(pool, running) == 3


async def test_dead_letters_keep_their_size_and_their_text_only_while_a_redrive_could_use_it(
    pool: AsyncConnectionPool,
) -> None:
    """Issue 28: rejected documents' texts must not stay in the jobs tables forever."""
    store = JobStore(pool, batch_documents=8)
    job = await store.create_job("tidy_test_letters", Priority.BULK)
    documents = [Document("ok", "fine text"), Document("bad", "x" * 700), Document("flaky", "y" * 300)]
    await store.stage(job.id, 0, documents, lambda d: "refused on purpose" if d.id == "bad" else None)
    await store.complete_upload(job.id, 3)
    async with pool.connection() as conn:  # "flaky" kept failing upstream (UNAVAILABLE)
        await conn.execute(
            "INSERT INTO meshsearch_ingest_dead_letters (job_id, seq, doc_id, code, reason, attempts, text_bytes) "
            "VALUES (%s, 2, 'flaky', 14, 'embedder unavailable', 8, 300)",
            (job.id,),
        )
    letters, _ = await store.dead_letters(job.id, 10, -1)
    assert {(letter.document_id, letter.text_bytes) for letter in letters} == {("bad", 700), ("flaky", 300)}
    await end_without_tidying(pool, job.id, "completed", 10)
    await store.forget_staged(job.id)
    assert await staged_count(pool, job.id) == 1  # only "flaky", which a redrive could store
    assert await store.purge_dead_letter_texts(3600, 1000) == 0  # within the retention
    await end_without_tidying(pool, job.id, "completed", 7200)
    assert await store.purge_dead_letter_texts(3600, 100_000) >= 1
    assert await staged_count(pool, job.id) == 0
    letters, _ = await store.dead_letters(job.id, 10, -1)
    assert {(letter.document_id, letter.text_bytes) for letter in letters} == {("bad", 700), ("flaky", 300)}
    with pytest.raises(FailedPrecondition) as refused:
        await store.redrive(job.id)
    assert refused.value.reason == "DEAD_LETTER_TEXTS_REMOVED"


async def test_a_redriven_job_keeps_its_staged_copies_and_is_tidied_again_when_it_ends(
    pool: AsyncConnectionPool,
) -> None:
    store = JobStore(pool, batch_documents=2)
    job_id = await staged_job(store, "tidy_test_redrive", documents=2)
    async with pool.connection() as conn:  # the second document kept failing (UNAVAILABLE)
        await conn.execute(
            "INSERT INTO meshsearch_ingest_dead_letters (job_id, seq, doc_id, code, reason, attempts) "
            "VALUES (%s, 1, 'd1', 14, 'embedder unavailable', 8)",
            (job_id,),
        )
        await conn.execute("UPDATE meshsearch_ingest_jobs SET done = 1, failed = 1 WHERE id = %s", (job_id,))
    await end_without_tidying(pool, job_id, "completed", 120)

    await store.forget_staged(job_id)
    await store.mark_tidy(job_id)
    assert await staged_count(pool, job_id) == 1  # the dead letter's copy, for a redrive
    assert job_id not in {job.id for job in await store.untidy_jobs(0, 1000)}

    redriven = await store.redrive(job_id)
    assert redriven == 1
    await store.forget_staged(job_id)  # a late tidying of its first end
    assert await staged_count(pool, job_id) == 1
    await end_without_tidying(pool, job_id, "completed", 120)
    assert job_id in {job.id for job in await store.untidy_jobs(60, 1000)}


async def test_ended_jobs_and_keys_are_deleted_after_their_retention_and_not_before(pool: AsyncConnectionPool) -> None:
    store = JobStore(pool, batch_documents=2)
    ended = await staged_job(store, "retention_ended", documents=2)
    running = await staged_job(store, "retention_running", documents=2)
    await end_without_tidying(pool, ended, "completed", 7200)
    assert await store.purge_ended_jobs(3600, 1000) == 0  # not tidied yet: the reconciler's tidying comes first
    await store.mark_tidy(ended)
    assert await store.purge_ended_jobs(3 * 3600, 1000) == 0  # within the retention
    assert await store.purge_ended_jobs(3600, 1000) >= 1
    with pytest.raises(NotFound):
        await store.get_job(ended)
    assert await staged_count(pool, ended) == 0  # its staged copies went with it
    assert (await store.get_job(running)).state == JobState.RUNNING  # never purged, however old

    keys = KeyStore(pool)
    now = datetime.now(UTC)
    made = {
        name: await keys.insert(
            StoredKey(
                f"ret{name}{uuid.uuid4().hex[:8]}", "retention-tenant", frozenset(), name, "x", expire_time=expiry
            )
        )
        for name, expiry in (("live", None), ("expired", now - timedelta(hours=2)), ("revoked", None))
    }
    await keys.revoke(made["revoked"].key_id, None)
    async with pool.connection() as conn:  # revoked two hours ago
        await conn.execute(
            "UPDATE meshsearch_api_keys SET revoke_time = revoke_time - interval '2 hours' WHERE key_id = %s",
            (made["revoked"].key_id,),
        )
    assert await keys.purge_ended(3 * 3600, 1000) == 0
    assert await keys.purge_ended(3600, 1000) >= 2
    left = {key.key_id for key in (await keys.list("retention-tenant", 10, None))[0]}
    assert left == {made["live"].key_id}
