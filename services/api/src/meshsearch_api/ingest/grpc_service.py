"""gRPC adapter of meshsearch.api.v1 IngestService (translation only; `Ingest` does the work)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api.conversions import jobs as job_messages
from meshsearch_api.conversions import public
from meshsearch_api.ingest.service import Ingest
from meshsearch_common.errors import InvalidArgument
from meshsearch_common.readiness import Readiness


class IngestServicer(pb_grpc.IngestServiceServicer):
    def __init__(self, ingest: Readiness[Ingest]) -> None:
        self._ingest = ingest

    async def StartIngest(
        self, request_iterator: AsyncIterator[pb.StartIngestRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.StartIngestResponse]:
        ingest = self._ingest.get()
        first = await anext(aiter(request_iterator), None)
        body = first.WhichOneof("body") if first is not None else None
        if first is not None and body == "start":
            job = await ingest.start(first.start.collection, job_messages.priority_in(first.start.priority))
        elif first is not None and body == "resume_job_id":
            job = await ingest.resume(first.resume_job_id)
        else:
            raise InvalidArgument("the first message must carry start (a new job) or resume_job_id", field="body")
        yield pb.StartIngestResponse(job_id=job.id, acknowledged=job.received, upload_complete=job.upload_complete)
        async for message in request_iterator:
            body = message.WhichOneof("body")
            if body == "batch":
                documents = [public.document_in(d) for d in message.batch.documents]
                acknowledged = await ingest.upload(job.id, message.batch.first_sequence, documents)
                yield pb.StartIngestResponse(job_id=job.id, acknowledged=acknowledged)
            elif body == "complete":
                job = await ingest.complete(job.id, message.complete.total_documents)
                yield pb.StartIngestResponse(job_id=job.id, acknowledged=job.received, upload_complete=True)
                return
            else:
                raise InvalidArgument(
                    "after the first message, send batch or complete (start and resume_job_id open an upload)",
                    field="body",
                )

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=job_messages.job_out(await self._ingest.get().get(request.job_id)))

    async def ListJobs(
        self, request: pb.ListJobsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListJobsResponse:
        jobs, token = await self._ingest.get().list_jobs(request.collection, request.page_size, request.page_token)
        return pb.ListJobsResponse(jobs=[job_messages.job_out(job) for job in jobs], next_page_token=token)

    async def CancelJob(
        self, request: pb.CancelJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(job=job_messages.job_out(await self._ingest.get().cancel(request.job_id)))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.WatchJobResponse]:
        async for progress in self._ingest.get().watch(request.job_id):
            yield job_messages.progress_out(progress)

    async def EstimateIngest(
        self, request_iterator: AsyncIterator[pb.EstimateIngestRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.EstimateIngestResponse:
        tally = None
        async for message in request_iterator:
            if tally is None:
                tally = await self._ingest.get().estimator(message.collection)
            tally.total_documents = max(tally.total_documents, message.total_documents)
            await tally.add([public.document_in(d) for d in message.documents])
        if tally is None:
            raise InvalidArgument("send at least one message with the collection and documents", field="documents")
        return job_messages.estimate_out(await tally.finish())

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListDeadLettersResponse:
        letters, token = await self._ingest.get().dead_letters(request.job_id, request.page_size, request.page_token)
        return pb.ListDeadLettersResponse(
            dead_letters=[job_messages.dead_letter_out(letter) for letter in letters], next_page_token=token
        )

    async def RedriveDeadLetters(
        self, request: pb.RedriveDeadLettersRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RedriveDeadLettersResponse:
        count, job = await self._ingest.get().redrive(request.job_id)
        return pb.RedriveDeadLettersResponse(redriven=count, job=job_messages.job_out(job))
