"""Bulk ingestion through the real mesh (api, worker, embedder, search, PostgreSQL): uploads,
resumption, progress, dead letters, redrive, cancellation, priorities, estimates and errors."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.client import error_details
from meshsearch.client.uploads import upload
from meshsearch.search.v1 import search_pb2 as spb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_api.settings import ApiSettings, WorkerSettings
from meshsearch_cli.stack import EmbeddedStack
from tests.e2e.clients import ApiClient
from tests.e2e.ingest_helpers import assert_stored_exactly_once, open_upload, sentences, stored_hashes, wait_job


@pytest.fixture
def ingest(api: ApiClient) -> pb_grpc.IngestServiceStub:
    return pb_grpc.IngestServiceStub(api.channel)


async def test_upload_runs_to_completion_with_progress_and_dead_letters(
    api: ApiClient, ingest: pb_grpc.IngestServiceStub
) -> None:
    await api.create("ingest_main")
    good = sentences(900, salt="main-")
    bad = [pb.Document(id="blank", text="   "), pb.Document(id=good[3].id, text="a repeated id")]
    acknowledged: list[int] = []
    result = await upload(
        api.channel, good + bad, collection="ingest_main", on_acknowledged=lambda _, n: acknowledged.append(n)
    )
    assert result.acknowledged == len(good) + len(bad)
    assert acknowledged == sorted(acknowledged) and acknowledged[-1] == result.acknowledged

    watch_started = time.monotonic()
    reports = [report async for report in ingest.WatchJob(pb.WatchJobRequest(job_id=result.job_id), timeout=300)]
    watched_s = time.monotonic() - watch_started
    final = reports[-1].job
    assert final.state == pb.JOB_STATE_COMPLETED and final.upload_complete
    assert (final.received, final.done, final.failed) == (902, 900, 2)
    assert final.HasField("finish_time")
    # The rate is measured over what the watch saw (at least a second of it): a watch that saw
    # work being done reports a rate after its first report (the final one included).
    if watched_s >= 1.5 and final.done > reports[0].job.done:
        assert any(r.documents_per_second > 0 for r in reports[1:]), reports
    dones = [r.job.done for r in reports]
    assert dones == sorted(dones)

    await assert_stored_exactly_once(api.channel, "ingest_main", good)
    letters = (await ingest.ListDeadLetters(pb.ListDeadLettersRequest(job_id=result.job_id), timeout=10)).dead_letters
    assert [(d.sequence, d.document_id, d.code) for d in letters] == [
        (900, "blank", grpc.StatusCode.INVALID_ARGUMENT.value[0]),
        (901, good[3].id, grpc.StatusCode.ALREADY_EXISTS.value[0]),
    ]
    assert "non-whitespace" in letters[0].reason and "sequence 3" in letters[1].reason
    hits = await api.query("ingest_main", good[10].text, top_k=1)
    assert hits[0].document.id == good[10].id

    # Documents at fault stay dead letters: redriving them would fail the same way.
    redriven = await ingest.RedriveDeadLetters(pb.RedriveDeadLettersRequest(job_id=result.job_id), timeout=10)
    assert redriven.redriven == 0 and redriven.job.state == pb.JOB_STATE_COMPLETED
    assert (redriven.job.done, redriven.job.failed) == (900, 2)


async def test_an_interrupted_upload_resumes_where_the_server_stopped(
    api: ApiClient, ingest: pb_grpc.IngestServiceStub
) -> None:
    await api.create("ingest_resume")
    documents = sentences(600, salt="resume-")
    call, job_id = await open_upload(ingest, "ingest_resume")
    for start in (0, 200):
        await call.write(
            pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=start, documents=documents[start : start + 200]))
        )
        assert (await call.read()).acknowledged == start + 200
    call.cancel()  # the connection breaks

    call = ingest.StartIngest()
    await call.write(pb.StartIngestRequest(resume_job_id=job_id))
    first = await call.read()
    assert (first.job_id, first.acknowledged, first.upload_complete) == (job_id, 400, False)
    # Overlapping resends are skipped; a gap is refused with where to resume.
    await call.write(pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=300, documents=documents[300:500])))
    assert (await call.read()).acknowledged == 500
    await call.write(pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=501, documents=documents[501:600])))
    with pytest.raises(grpc.aio.AioRpcError) as gap:
        await call.read()
    assert gap.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "resend from sequence 500" in str(
        gap.value.details()
    )
    violation = error_details(gap.value)["PreconditionFailure"].violations[0]
    assert (violation.type, violation.subject) == ("UPLOAD_GAP", "batch.first_sequence")

    result = await upload(api.channel, documents, job_id=job_id)  # a new process resumes the job
    assert result.acknowledged == 600
    job = await wait_job(api.channel, job_id, 300)
    assert (job.state, job.done, job.failed) == (pb.JOB_STATE_COMPLETED, 600, 0)
    await assert_stored_exactly_once(api.channel, "ingest_resume", documents)


async def test_complete_must_match_what_the_server_holds(api: ApiClient, ingest: pb_grpc.IngestServiceStub) -> None:
    await api.create("ingest_total")
    call, _ = await open_upload(ingest, "ingest_total")
    await call.write(pb.StartIngestRequest(batch=pb.IngestBatch(documents=sentences(10))))
    await call.read()
    await call.write(pb.StartIngestRequest(complete=pb.UploadComplete(total_documents=12)))
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await call.read()
    assert wrong.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "holds 10" in str(wrong.value.details())


# The embedded stack runs one worker with the default settings.
IN_FLIGHT_BATCHES = WorkerSettings.model_fields["concurrency"].default
BATCH_DOCUMENTS = ApiSettings.model_fields["ingest_batch_documents"].default


async def settled_job(
    ingest: pb_grpc.IngestServiceStub, job_id: str, quiet_s: float = 3.0, within_s: float = 120
) -> pb.Job:
    """The job once its progress has not moved for `quiet_s` (its in-flight batches are over)."""
    deadline = time.monotonic() + within_s
    job = (await ingest.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)).job
    while time.monotonic() < deadline:
        await asyncio.sleep(quiet_s)
        now = (await ingest.GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)).job
        if (now.done, now.failed) == (job.done, job.failed):
            return now
        job = now
    raise AssertionError(f"job {job_id} still moving after {within_s} s: {job}")


async def test_cancel_stops_a_job_and_its_upload(api: ApiClient, ingest: pb_grpc.IngestServiceStub) -> None:
    await api.create("ingest_cancel")
    documents = sentences(3000, salt="cancel-")
    result = await upload(api.channel, documents, collection="ingest_cancel", priority=pb.JOB_PRIORITY_BULK)
    cancelled = (await ingest.CancelJob(pb.CancelJobRequest(job_id=result.job_id), timeout=10)).job
    assert cancelled.state == pb.JOB_STATE_CANCELLED and cancelled.HasField("finish_time")
    # Batches already claimed finish (on a busy CPU that takes seconds); no new batch is claimed.
    # So progress settles, at most one batch per worker slot above what it was at the cancel.
    later = await settled_job(ingest, result.job_id)
    assert later.state == pb.JOB_STATE_CANCELLED
    assert later.done <= cancelled.done + IN_FLIGHT_BATCHES * BATCH_DOCUMENTS < len(documents), (cancelled, later)
    again = (await ingest.CancelJob(pb.CancelJobRequest(job_id=result.job_id), timeout=10)).job
    assert again.state == pb.JOB_STATE_CANCELLED  # idempotent
    redrive = ingest.RedriveDeadLetters(pb.RedriveDeadLettersRequest(job_id=result.job_id), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await redrive
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    # A job cancelled during its upload takes no more documents, now or on resumption.
    call, job_id = await open_upload(ingest, "ingest_cancel")
    await call.write(pb.StartIngestRequest(batch=pb.IngestBatch(documents=documents[:10])))
    await call.read()
    await ingest.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=10)
    await call.write(pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=10, documents=documents[10:20])))
    with pytest.raises(grpc.aio.AioRpcError) as more:
        await call.read()
    assert more.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "cancelled" in str(more.value.details())
    resume = ingest.StartIngest(iter([pb.StartIngestRequest(resume_job_id=job_id)]), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as resumed:
        async for _ in resume:
            pass
    assert resumed.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_an_interactive_job_overtakes_a_bulk_load(api: ApiClient, ingest: pb_grpc.IngestServiceStub) -> None:
    await api.create("ingest_bulk")
    await api.create("ingest_urgent")
    bulk = await upload(
        api.channel, sentences(4000, salt="bulk-"), collection="ingest_bulk", priority=pb.JOB_PRIORITY_BULK
    )
    urgent = await upload(
        api.channel, sentences(128, salt="urgent-"), collection="ingest_urgent", priority=pb.JOB_PRIORITY_INTERACTIVE
    )
    done = await wait_job(api.channel, urgent.job_id, 120)
    assert done.state == pb.JOB_STATE_COMPLETED
    behind = (await ingest.GetJob(pb.GetJobRequest(job_id=bulk.job_id), timeout=10)).job
    assert behind.state == pb.JOB_STATE_RUNNING and behind.done < 3000, behind
    await ingest.CancelJob(pb.CancelJobRequest(job_id=bulk.job_id), timeout=10)


async def test_estimate_counts_tokens_chunks_time_and_broken_limits(
    api: ApiClient, ingest: pb_grpc.IngestServiceStub
) -> None:
    await api.create("ingest_estimate")
    sample = sentences(200, salt="estimate-")
    long = pb.Document(id="long", text=" ".join(d.text for d in sample[:60]))  # several chunks
    broken = [
        pb.Document(id="", text="no id"),
        pb.Document(id="x", text=""),
        pb.Document(id=sample[0].id, text="again"),
    ]

    def requests() -> list[pb.EstimateIngestRequest]:
        return [
            pb.EstimateIngestRequest(collection="ingest_estimate", documents=sample[:100], total_documents=20_000),
            pb.EstimateIngestRequest(documents=[*sample[100:], long, *broken]),
        ]

    estimate = await ingest.EstimateIngest(iter(requests()), timeout=60)
    assert estimate.documents == 20_000
    sent = len(sample) + 1 + len(broken)
    assert estimate.chunks > 20_000 * (len(sample) + 1) / sent  # the long one makes several
    assert estimate.tokens > estimate.chunks * 5
    assert estimate.embedder_tokens_per_second > 0 and estimate.estimated_duration.ToTimedelta().total_seconds() > 0
    limits = {v.limit: (v.documents, list(v.example_ids)) for v in estimate.violations}
    assert limits == {"id_length": (1, [""]), "empty_text": (1, ["x"]), "duplicate_id": (1, [sample[0].id])}


async def test_bad_calls_get_precise_statuses(api: ApiClient, ingest: pb_grpc.IngestServiceStub) -> None:
    unknown = "0" * 32
    for call in (
        ingest.GetJob(pb.GetJobRequest(job_id=unknown), timeout=10),
        ingest.CancelJob(pb.CancelJobRequest(job_id=unknown), timeout=10),
        ingest.ListDeadLetters(pb.ListDeadLettersRequest(job_id=unknown), timeout=10),
        ingest.RedriveDeadLetters(pb.RedriveDeadLettersRequest(job_id=unknown), timeout=10),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND and unknown in str(missing.value.details())
    with pytest.raises(grpc.aio.AioRpcError) as watched:
        async for _ in ingest.WatchJob(pb.WatchJobRequest(job_id=unknown), timeout=10):
            pass
    assert watched.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as empty_id:
        await ingest.GetJob(pb.GetJobRequest(), timeout=10)
    assert empty_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def first_answer(*messages: pb.StartIngestRequest) -> grpc.aio.AioRpcError:
        call = ingest.StartIngest(iter(messages), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            async for _ in call:
                pass
        return failed.value

    no_opening = await first_answer(pb.StartIngestRequest(batch=pb.IngestBatch(documents=sentences(1))))
    assert no_opening.code() == grpc.StatusCode.INVALID_ARGUMENT and "first message" in str(no_opening.details())
    no_collection = await first_answer(pb.StartIngestRequest(start=pb.IngestOptions(collection="no_such_collection")))
    assert no_collection.code() == grpc.StatusCode.NOT_FOUND
    await api.create("ingest_bad")
    odd_priority = await first_answer(
        pb.StartIngestRequest(start=pb.IngestOptions(collection="ingest_bad", priority=99))  # type: ignore[arg-type]
    )
    assert odd_priority.code() == grpc.StatusCode.INVALID_ARGUMENT and "priority" in str(odd_priority.details())
    too_many = await first_answer(
        pb.StartIngestRequest(start=pb.IngestOptions(collection="ingest_bad")),
        pb.StartIngestRequest(batch=pb.IngestBatch(documents=sentences(257))),
    )
    assert too_many.code() == grpc.StatusCode.INVALID_ARGUMENT and "257" in str(too_many.details())
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await ingest.ListJobs(pb.ListJobsRequest(page_token="garbage!"), timeout=10)
    assert token.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_jobs_pages_newest_first(api: ApiClient, ingest: pb_grpc.IngestServiceStub) -> None:
    await api.create("ingest_list")
    ids = [
        (await upload(api.channel, sentences(3, salt=f"list{i}-"), collection="ingest_list")).job_id for i in range(3)
    ]
    first = await ingest.ListJobs(pb.ListJobsRequest(collection="ingest_list", page_size=2), timeout=10)
    second = await ingest.ListJobs(
        pb.ListJobsRequest(collection="ingest_list", page_size=2, page_token=first.next_page_token), timeout=10
    )
    assert [j.id for j in first.jobs] + [j.id for j in second.jobs] == ids[::-1]
    assert not second.next_page_token


def test_the_embedded_stack_runs_a_worker(stack: EmbeddedStack) -> None:
    assert stack.processes["worker"].poll() is None


async def test_a_job_whose_collection_is_deleted_fails_with_the_reason(
    api: ApiClient, ingest: pb_grpc.IngestServiceStub
) -> None:
    await api.create("ingest_vanishing")
    result = await upload(
        api.channel, sentences(2000, salt="gone-"), collection="ingest_vanishing", priority=pb.JOB_PRIORITY_BULK
    )
    await api.collections.DeleteCollection(pb.DeleteCollectionRequest(name="ingest_vanishing"), timeout=30)
    job = await wait_job(api.channel, result.job_id, 120)
    assert job.state == pb.JOB_STATE_FAILED and "does not exist" in job.error, job
    assert job.done < 2000


async def test_a_job_does_not_write_into_a_collection_created_again_under_its_name(
    api: ApiClient, ingest: pb_grpc.IngestServiceStub
) -> None:
    await api.create("ingest_reborn")
    documents = sentences(60, salt="reborn-")
    call, job_id = await open_upload(ingest, "ingest_reborn")
    await call.write(pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=0, documents=documents[:50])))
    assert (await call.read()).acknowledged == 50
    call.cancel()  # the client goes away mid-upload, its 50 documents are stored in the background
    stored = await wait_job(api.channel, job_id, 120, until_done=50)
    assert (stored.state, stored.done) == (pb.JOB_STATE_RUNNING, 50), stored

    await api.collections.DeleteCollection(pb.DeleteCollectionRequest(name="ingest_reborn"), timeout=30)
    await api.create("ingest_reborn")
    result = await upload(api.channel, documents, collection="ingest_reborn", job_id=job_id)
    job = await wait_job(api.channel, result.job_id, 120)
    assert job.state == pb.JOB_STATE_FAILED and "created again" in job.error, job
    assert await stored_hashes(api.channel, "ingest_reborn") == {}


async def test_a_job_into_an_empty_collection_defers_its_index_until_the_job_ends(
    api: ApiClient, ingest: pb_grpc.IngestServiceStub, stack: EmbeddedStack
) -> None:
    await api.create("ingest_deferred")
    documents = sentences(300, salt="deferred-")
    call, job_id = await open_upload(ingest, "ingest_deferred")
    for start in (0, 150):
        batch = pb.IngestBatch(first_sequence=start, documents=documents[start : start + 150])
        await call.write(pb.StartIngestRequest(batch=batch))
        assert (await call.read()).acknowledged == start + 150
    assert (await wait_job(api.channel, job_id, 120, until_done=300)).done == 300

    async with stack.channel("search") as channel:
        search = search_pb2_grpc.VectorStoreServiceStub(channel)

        async def index_state() -> int:
            answer = await search.GetCollection(spb.GetCollectionRequest(name="ingest_deferred"), timeout=10)
            return answer.collection.index_state

        # The upload is still open: the job runs, its collection unindexed, searches still right.
        assert await index_state() == spb.INDEX_STATE_DEFERRED
        hits = await api.query("ingest_deferred", documents[42].text, top_k=1)
        assert hits[0].document.id == documents[42].id

        await call.write(pb.StartIngestRequest(complete=pb.UploadComplete(total_documents=300)))
        await call.read()
        assert (await wait_job(api.channel, job_id, 120)).state == pb.JOB_STATE_COMPLETED
        deadline = time.monotonic() + 60
        while await index_state() != spb.INDEX_STATE_READY and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert await index_state() == spb.INDEX_STATE_READY
    call.cancel()
    await assert_stored_exactly_once(api.channel, "ingest_deferred", documents)
