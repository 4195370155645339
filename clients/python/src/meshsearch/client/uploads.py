"""Resumable uploads of ingest jobs (StartIngest), as every client the project ships does them.

The server acknowledges a document once it is stored durably, by sequence number. The client
keeps what it sent but has not seen acknowledged; when the stream breaks (the api restarted, a
network blip) it reopens the upload with the job's id, learns how far the server got, and
resends from there: nothing is lost and nothing is stored twice. A later process can resume
too (`resume_job_id`): it skips the documents the server already holds.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_common.backoff import Backoff
from meshsearch_common.errors import FINAL_CODES

MESSAGE_DOCUMENTS = 256  # the server's default limit of documents per message
MESSAGE_BYTES = 2 * 1024 * 1024  # half the server's default limit of bytes per message
IN_FLIGHT_MESSAGES = 4  # messages sent ahead of their acknowledgement
# Answers other than FINAL_CODES (UNAVAILABLE, and the INTERNAL a client sees when it writes to
# a connection that just broke) are retried: resuming is always safe, since the server skips
# what it already holds.
RECONNECT_BACKOFF = Backoff(initial_s=0.4, max_s=10.0, jitter="equal")


@dataclass
class UploadResult:
    job_id: str
    acknowledged: int
    reconnects: int


@dataclass
class _Unacknowledged:
    """Documents sent but not yet acknowledged, from sequence number `start` on."""

    documents: collections.deque[pb.Document]
    start: int = 0

    def drop_below(self, acknowledged: int) -> None:
        while self.documents and self.start < acknowledged:
            self.documents.popleft()
            self.start += 1
        self.start = max(self.start, acknowledged)


class UploadFailed(RuntimeError):
    def __init__(self, code: grpc.StatusCode, message: str, job_id: str) -> None:
        super().__init__(message)
        self.code = code
        self.job_id = job_id


async def upload(
    channel: grpc.aio.Channel,
    documents: Iterable[pb.Document],
    collection: str = "",
    priority: pb.JobPriority = pb.JOB_PRIORITY_NORMAL,
    job_id: str = "",
    on_acknowledged: Callable[[str, int], None] = lambda job_id, count: None,
    max_reconnects: int = 20,
    metadata: tuple[tuple[str, str], ...] = (),
) -> UploadResult:
    """Upload `documents` to a new job on `collection`, or continue job `job_id`; return once
    the server has acknowledged the complete upload."""
    stub = pb_grpc.IngestServiceStub(channel)
    source: Iterator[pb.Document] = iter(documents)
    unacknowledged = _Unacknowledged(collections.deque())
    skip_to: int | None = None  # a resumed job from an earlier process: its documents up to here are held
    reconnects = 0
    while True:
        call = stub.StartIngest(metadata=metadata)
        try:
            if job_id:
                await call.write(pb.StartIngestRequest(resume_job_id=job_id))
            else:
                await call.write(
                    pb.StartIngestRequest(start=pb.IngestOptions(collection=collection, priority=priority))
                )
            first = await call.read()
            if not isinstance(first, pb.StartIngestResponse):
                raise UploadFailed(grpc.StatusCode.UNAVAILABLE, "the server closed the upload", job_id)
            if not job_id:
                skip_to = 0
            job_id = first.job_id
            acknowledged = first.acknowledged
            on_acknowledged(job_id, acknowledged)
            if first.upload_complete:
                return UploadResult(job_id, acknowledged, reconnects)
            if skip_to is None:  # resuming a job this process did not start: skip what it holds
                for _ in range(acknowledged):
                    if next(source, None) is None:
                        break
                skip_to = acknowledged
            unacknowledged.drop_below(acknowledged)
            acknowledged = await _send(call, source, unacknowledged, acknowledged, job_id, on_acknowledged)
            return UploadResult(job_id, acknowledged, reconnects)
        except grpc.aio.AioRpcError as error:
            if error.code() in FINAL_CODES or reconnects >= max_reconnects:
                raise UploadFailed(error.code(), error.details() or error.code().name, job_id) from error
            reconnects += 1
            await asyncio.sleep(RECONNECT_BACKOFF.delay_s(reconnects))
        finally:
            call.cancel()


async def _send(
    call: grpc.aio.StreamStreamCall[pb.StartIngestRequest, pb.StartIngestResponse],
    source: Iterator[pb.Document],
    unacknowledged: _Unacknowledged,
    acknowledged: int,
    job_id: str,
    on_acknowledged: Callable[[str, int], None],
) -> int:
    """Send what is unacknowledged, then the rest of `source`, then `complete`; return the
    final acknowledged count. Raises the stream's error when it breaks."""
    next_sequence = unacknowledged.start
    in_flight = 0
    resend = list(unacknowledged.documents)
    position = 0

    async def read_ack() -> None:
        nonlocal acknowledged, in_flight
        answer = await call.read()
        if not isinstance(answer, pb.StartIngestResponse):
            raise UploadFailed(grpc.StatusCode.UNAVAILABLE, "the server closed the upload", job_id)
        acknowledged = answer.acknowledged
        in_flight -= 1
        on_acknowledged(job_id, acknowledged)

    while True:
        if position < len(resend):
            batch = _message_of(iter(resend[position:]))
            position += len(batch)
        else:
            batch = _message_of(source)
            unacknowledged.documents.extend(batch)
        if not batch:
            break
        await call.write(pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=next_sequence, documents=batch)))
        next_sequence += len(batch)
        in_flight += 1
        while in_flight >= IN_FLIGHT_MESSAGES:
            await read_ack()
        unacknowledged.drop_below(acknowledged)
    while in_flight:
        await read_ack()
    await call.write(pb.StartIngestRequest(complete=pb.UploadComplete(total_documents=next_sequence)))
    final = await call.read()
    if not isinstance(final, pb.StartIngestResponse) or not final.upload_complete:
        raise UploadFailed(grpc.StatusCode.UNAVAILABLE, "the server did not confirm the complete upload", job_id)
    await call.done_writing()
    unacknowledged.drop_below(final.acknowledged)
    return int(final.acknowledged)


def _message_of(documents: Iterator[pb.Document]) -> list[pb.Document]:
    """The next message's documents: up to MESSAGE_DOCUMENTS of them and about MESSAGE_BYTES
    (a single larger document goes alone; the server judges it)."""
    batch: list[pb.Document] = []
    size = 0
    for document in documents:
        batch.append(document)
        size += document.ByteSize()
        if len(batch) == MESSAGE_DOCUMENTS or size >= MESSAGE_BYTES:
            break
    return batch
