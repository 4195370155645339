"""`meshsearch ingest PATH`: upload documents to a durable ingest job and follow it to the end.

The upload resumes by itself after a broken connection (see `meshsearch.client.uploads`), and a
later run resumes it with `--job ID` when this one was stopped. Two progress bars: documents
the server has acknowledged (stored durably, safe from any crash), and documents stored in the
collection (from WatchJob).
"""

from __future__ import annotations

import asyncio

import grpc
import typer

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.client import AsyncClient
from meshsearch.client.uploads import UploadFailed, upload
from meshsearch_cli.commands.jobs import follow, outcome, progress_bar
from meshsearch_cli.console import (
    DATA_ERROR,
    EXIT_CODES,
    NO_INPUT,
    SOFTWARE,
    TargetOption,
    connect,
    fail,
    out,
    run_async,
)
from meshsearch_cli.sources import Fields, Source, SourceError

PRIORITIES = {
    "bulk": pb.JOB_PRIORITY_BULK,
    "normal": pb.JOB_PRIORITY_NORMAL,
    "interactive": pb.JOB_PRIORITY_INTERACTIVE,
}


async def _ensure_collection(api: AsyncClient, name: str) -> None:
    stub = api.collections
    try:
        await stub.GetCollection(pb.GetCollectionRequest(name=name), timeout=30)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        await stub.CreateCollection(pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30)
        out.print(f"created collection {name}")


@run_async
async def ingest(
    path: str = typer.Argument(
        ..., help="A .jsonl or .csv file, a directory of .txt/.md files, or - (JSONL on stdin)."
    ),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection to load into."),
    create: bool = typer.Option(False, "--create", help="Create the collection if it does not exist."),
    priority: str = typer.Option("normal", help="bulk, normal or interactive."),
    job: str = typer.Option("", "--job", help="Resume the upload of this job (from an interrupted run)."),
    id_field: str = typer.Option("id", help="Field holding each document's id (BEIR's _id also works)."),
    text_field: str = typer.Option("text", help="Field holding the text."),
    title_field: str = typer.Option("title", help="Field prefixed to the text when present."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the job until it ends."),
    target: str = TargetOption,
) -> None:
    """Load documents durably: upload them to an ingest job and show its progress."""
    if priority not in PRIORITIES:
        raise fail(f"unknown priority {priority!r}; use one of {', '.join(PRIORITIES)}", 2)
    source = Source(path, Fields(id_field, text_field, title_field))
    try:
        source.check()
        total = source.count()
    except FileNotFoundError:
        raise fail(f"{path} does not exist", NO_INPUT) from None
    except SourceError as exc:
        raise fail(str(exc), DATA_ERROR) from None
    job_id = job
    known = asyncio.Event()

    def resume_hint() -> str:
        return f"resume with: meshsearch ingest {path} -c {collection} --job {job_id}" if job_id else ""

    async with connect(target) as api:
        if create and not job:
            await _ensure_collection(api, collection)
        with progress_bar() as progress:
            uploading = progress.add_task("uploaded", total=total, rate="")
            storing = progress.add_task("stored  ", total=None, rate="")

            def acknowledged(new_job_id: str, count: int) -> None:
                nonlocal job_id
                job_id = new_job_id
                known.set()
                progress.update(uploading, completed=count)

            async def follow_when_known() -> pb.Job:
                await known.wait()
                return await follow(api.ingest, job_id, progress, storing)

            watcher = asyncio.create_task(follow_when_known()) if wait else None
            try:
                result = await upload(
                    api.channel,
                    source,
                    collection=collection,
                    priority=PRIORITIES[priority],
                    job_id=job,
                    on_acknowledged=acknowledged,
                )
            except UploadFailed as exc:
                if watcher:
                    watcher.cancel()
                raise fail(
                    f"upload stopped: {exc.code.name}: {exc}. {resume_hint()}", EXIT_CODES.get(exc.code, SOFTWARE)
                ) from None
            except SourceError as exc:
                if watcher:
                    watcher.cancel()
                raise fail(f"{exc}. Fix the input, then {resume_hint()}", DATA_ERROR) from None
            except asyncio.CancelledError:
                out.print(f"upload interrupted; the job keeps what was acknowledged. {resume_hint()}")
                raise
            progress.update(uploading, total=result.acknowledged, completed=result.acknowledged)
            if watcher is None:
                out.print(
                    f"job {result.job_id}: upload complete ({result.acknowledged:,} documents); "
                    f"follow it with `meshsearch jobs watch {result.job_id}`"
                )
                return
            final = await watcher
    out.print(f"job {job_id}")
    raise typer.Exit(outcome(final))
