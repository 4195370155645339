"""`meshsearch jobs list|show|watch|cancel|dead-letter`."""

from __future__ import annotations

import asyncio

import grpc
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.console import PARTIAL, TargetOption, connect, out, run_async
from meshsearch_common.backoff import Backoff
from meshsearch_common.errors import FINAL_CODES

app = typer.Typer(
    help="Follow, list, cancel ingest jobs, and read or redrive their dead letters.", no_args_is_help=True
)
# A watch that breaks for these reasons is opened again (the job is unaffected).
MAX_REWATCHES = 30
REWATCH_BACKOFF = Backoff(initial_s=1.0, max_s=10.0, jitter="none")
JobArgument = typer.Argument(..., help="Job id (from `meshsearch ingest` or `jobs list`).")


def state_name(job: pb.Job) -> str:
    return pb.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()


def _jobs_table(jobs: list[pb.Job]) -> Table:
    table = Table(
        Column("job", no_wrap=True, min_width=32),  # ids are typed back: never cut them
        "collection",
        "state",
        "priority",
        "received",
        "done",
        "failed",
        "created",
    )
    for job in jobs:
        table.add_row(
            job.id,
            job.collection,
            state_name(job) + ("" if job.upload_complete or job.state != pb.JOB_STATE_RUNNING else " (uploading)"),
            pb.JobPriority.Name(job.priority).removeprefix("JOB_PRIORITY_").lower(),
            f"{job.received:,}",
            f"{job.done:,}",
            f"{job.failed:,}",
            job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def outcome(job: pb.Job) -> int:
    """Exit code of a job that ended: 0 when every document was stored."""
    if job.state == pb.JOB_STATE_COMPLETED and job.failed == 0:
        out.print(f"[green]completed[/]: {job.done:,} documents stored")
        return 0
    if job.state == pb.JOB_STATE_COMPLETED:
        out.print(
            f"[yellow]completed with dead letters[/]: {job.done:,} stored, {job.failed:,} not; "
            f"see `meshsearch jobs dead-letter {job.id}`"
        )
    else:
        out.print(f"[red]{state_name(job)}[/]: {job.done:,} stored, {job.failed:,} failed {job.error}".rstrip())
    return PARTIAL


async def follow(stub: pb_grpc.IngestServiceStub, job_id: str, progress: Progress, task: TaskID) -> pb.Job:
    """Drive `task` of `progress` from WatchJob until the job ends; return it. The job runs on
    whatever happens to this watch, so a broken stream (the api restarting) is watched again."""
    job = pb.Job()
    failures = 0
    while True:
        try:
            async for report in stub.WatchJob(pb.WatchJobRequest(job_id=job_id)):
                failures = 0
                job = report.job
                progress.update(
                    task,
                    completed=job.done + job.failed,
                    total=job.received if job.upload_complete else None,
                    rate=f"{report.documents_per_second:,.0f}/s" if report.documents_per_second else "",
                )
            return job
        except grpc.aio.AioRpcError as error:
            failures += 1
            if error.code() in FINAL_CODES or failures > MAX_REWATCHES:
                raise
            await asyncio.sleep(REWATCH_BACKOFF.delay_s(failures))


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=out,
        transient=False,
    )


@app.command("list")
@run_async
async def list_(
    collection: str = typer.Option("", "--collection", "-c", help="Only jobs of this collection."),
    limit: int = typer.Option(20, min=1, max=1000, help="Most jobs to show, newest first."),
    target: str = TargetOption,
) -> None:
    """List jobs, newest first."""
    async with connect(target) as api:
        page = await api.ingest.ListJobs(pb.ListJobsRequest(collection=collection, page_size=limit), timeout=30)
    out.print(_jobs_table(list(page.jobs)) if page.jobs else "no jobs")


@app.command()
@run_async
async def show(job_id: str = JobArgument, target: str = TargetOption) -> None:
    """Describe one job."""
    async with connect(target) as api:
        job = (await api.ingest.GetJob(pb.GetJobRequest(job_id=job_id), timeout=30)).job
    out.print(_jobs_table([job]))
    if job.error:
        out.print(f"error: {job.error}")


@app.command()
@run_async
async def watch(job_id: str = JobArgument, target: str = TargetOption) -> None:
    """Show a job's progress until it ends."""
    async with connect(target) as api:
        with progress_bar() as progress:
            task = progress.add_task("storing", total=None, rate="")
            job = await follow(api.ingest, job_id, progress, task)
    raise typer.Exit(outcome(job))


@app.command()
@run_async
async def cancel(job_id: str = JobArgument, target: str = TargetOption) -> None:
    """Cancel a job: what is stored stays, the rest is not processed."""
    async with connect(target) as api:
        job = (await api.ingest.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=30)).job
    out.print(_jobs_table([job]))


@app.command("dead-letter")
@run_async
async def dead_letter(
    job_id: str = JobArgument,
    redrive: bool = typer.Option(False, "--redrive", help="Queue them again (after fixing the cause)."),
    limit: int = typer.Option(50, min=1, max=1000, help="Most to show."),
    target: str = TargetOption,
) -> None:
    """List the documents of a job that were not stored, with reasons; or redrive them."""
    async with connect(target) as api:
        stub = api.ingest
        if redrive:
            answer = await stub.RedriveDeadLetters(pb.RedriveDeadLettersRequest(job_id=job_id), timeout=60)
            out.print(f"queued {answer.redriven:,} documents again; follow with `meshsearch jobs watch {job_id}`")
            return
        page = await stub.ListDeadLetters(pb.ListDeadLettersRequest(job_id=job_id, page_size=limit), timeout=30)
    if not page.dead_letters:
        out.print("no dead letters")
        return
    table = Table("sequence", "id", "code", "attempts", "reason")
    for letter in page.dead_letters:
        table.add_row(str(letter.sequence), letter.document_id, str(letter.code), str(letter.attempts), letter.reason)
    out.print(table)
    if page.next_page_token:
        out.print("(more; raise --limit to see them)")
