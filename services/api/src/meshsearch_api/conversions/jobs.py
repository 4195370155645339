"""meshsearch.api.v1's IngestService to and from the ingest job types."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_api.ingest.domain import DeadLetter, Estimate, Job, JobState, Priority, Progress
from meshsearch_common.errors import enum_member

PRIORITIES: dict[int, Priority] = {
    pb.JOB_PRIORITY_UNSPECIFIED: Priority.NORMAL,
    pb.JOB_PRIORITY_BULK: Priority.BULK,
    pb.JOB_PRIORITY_NORMAL: Priority.NORMAL,
    pb.JOB_PRIORITY_INTERACTIVE: Priority.INTERACTIVE,
}
PRIORITIES_OUT: dict[Priority, Any] = {
    Priority.BULK: pb.JOB_PRIORITY_BULK,
    Priority.NORMAL: pb.JOB_PRIORITY_NORMAL,
    Priority.INTERACTIVE: pb.JOB_PRIORITY_INTERACTIVE,
}
JOB_STATES_OUT: dict[JobState, Any] = {
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.COMPLETED: pb.JOB_STATE_COMPLETED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}


def priority_in(value: int) -> Priority:
    return enum_member(PRIORITIES, value, "start.priority")


def job_out(job: Job) -> pb.Job:
    message = pb.Job(
        id=job.id,
        collection=job.collection,
        state=JOB_STATES_OUT[job.state],
        priority=PRIORITIES_OUT[job.priority],
        upload_complete=job.upload_complete,
        received=job.received,
        done=job.done,
        failed=job.failed,
        error=job.error,
    )
    message.create_time.FromDatetime(job.create_time)
    message.update_time.FromDatetime(job.update_time)
    if job.finish_time is not None:
        message.finish_time.FromDatetime(job.finish_time)
    return message


def progress_out(progress: Progress) -> pb.WatchJobResponse:
    message = pb.WatchJobResponse(job=job_out(progress.job), documents_per_second=progress.documents_per_second)
    if progress.eta_s is not None:
        message.eta.FromTimedelta(timedelta(seconds=progress.eta_s))
    return message


def dead_letter_out(letter: DeadLetter) -> pb.DeadLetter:
    message = pb.DeadLetter(
        sequence=letter.sequence,
        document_id=letter.document_id,
        code=letter.code,
        reason=letter.reason,
        attempts=letter.attempts,
        text_bytes=letter.text_bytes,
    )
    if letter.create_time is not None:
        message.create_time.FromDatetime(letter.create_time)
    return message


def estimate_out(estimate: Estimate) -> pb.EstimateIngestResponse:
    message = pb.EstimateIngestResponse(
        documents=estimate.documents,
        chunks=estimate.chunks,
        tokens=estimate.tokens,
        embedder_tokens_per_second=estimate.tokens_per_second,
        violations=[
            pb.LimitViolation(
                limit=v.limit, documents=v.documents, description=v.description, example_ids=v.example_ids or []
            )
            for v in estimate.violations
        ],
    )
    if estimate.duration_s is not None:
        message.estimated_duration.FromTimedelta(timedelta(seconds=estimate.duration_s))
    return message
