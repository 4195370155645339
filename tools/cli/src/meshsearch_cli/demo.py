"""`meshsearch demo`: the main job end to end on the embedded default stack.

Starts the stack (supervised: a crashed service is restarted), loads the standard library's
docstrings as a durable ingest job (uploaded, then stored by the worker, with a progress bar;
skipped when a previous run already indexed them), answers natural-language queries with
ranked, scored results, and stops everything. Any failure ends in one clear message naming the
service that looks responsible and where its log is, never a traceback.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import grpc
from rich.console import Console

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.client import AsyncClient, Connection
from meshsearch.client.uploads import UploadFailed
from meshsearch_cli.commands.jobs import follow, progress_bar
from meshsearch_cli.corpus import CorpusDocument, stdlib_docstrings
from meshsearch_cli.indexing import IndexingFailed
from meshsearch_cli.stack import EmbeddedStack, Ports, cpus_from_env
from meshsearch_cli.supervisor import GaveUp, Supervisor

COLLECTION = "stdlib_docs"
QUERIES = (
    "parse command line options and arguments",
    "compute the greatest common divisor of two integers",
    "read rows from a comma separated values file",
    "run a shell command and capture what it prints",
    "compare two sequences of lines and show the differences",
    "generate a cryptographically strong random token",
    "compress data with the gzip format",
    "wait for several asynchronous tasks to finish",
)


async def _index(api: AsyncClient, documents: list[CorpusDocument], console: Console) -> None:
    """Load the corpus as a durable ingest job: upload (each document stored before it is
    acknowledged), then follow the workers storing it, with a progress bar from WatchJob."""
    messages = []
    for document in documents:
        message = pb.Document(id=document.id, text=document.text)
        message.metadata.update({"module": document.module, "kind": document.kind})
        messages.append(message)
    result = await api.upload(messages, collection=COLLECTION, priority=pb.JOB_PRIORITY_INTERACTIVE)
    console.print(f"uploaded {result.acknowledged} documents to ingest job {result.job_id}")
    with progress_bar() as progress:
        task = progress.add_task("indexing", total=result.acknowledged, rate="")
        job = await follow(api.ingest, result.job_id, progress, task)
    if job.state != pb.JOB_STATE_COMPLETED or job.failed:
        raise IndexingFailed(
            grpc.StatusCode.ABORTED,
            f"ingest job {job.id} ended {pb.JobState.Name(job.state)} with {job.failed} failed documents "
            f"(see `meshsearch jobs dead-letter {job.id}`) {job.error}",
        )


async def _run(address: str, limit: int, console: Console) -> None:
    documents = stdlib_docstrings(limit)
    async with AsyncClient(Connection(address)) as api:
        try:
            collection = (await api.collections.GetCollection(pb.GetCollectionRequest(name=COLLECTION))).collection
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            collection = await api.create_collection(COLLECTION)
        console.print(
            f"collection [bold]{COLLECTION}[/]: model {collection.model.id} ({collection.model.dimension} dims)"
        )
        if collection.document_count >= len(documents):
            console.print(f"{collection.document_count} documents already indexed by a previous run; skipping indexing")
        else:
            started = time.perf_counter()
            await _index(api, documents, console)
            elapsed = time.perf_counter() - started
            console.print(
                f"indexed {len(documents)} documents in {elapsed:.1f}s ({len(documents) / elapsed:.0f} docs/s)"
            )
        for query in QUERIES:
            response = await api.query(COLLECTION, query, top_k=3)
            console.print(f"\n[bold]query:[/] {query}")
            for rank, hit in enumerate(response.hits, start=1):
                text = hit.document.text if len(hit.document.text) <= 90 else hit.document.text[:87] + "..."
                console.print(f"  {rank}. {hit.score:.3f}  [cyan]{hit.document.id}[/]  {text}", highlight=False)


def responsible_service(details: str) -> str:
    """The service an api error points at: the api names the upstream that failed."""
    for name in ("embedder", "search"):
        if name in details:
            return name
    return "api"


class _SupervisorThread(threading.Thread):
    """Runs the supervisor beside the demo's event loop; remembers if it gave up."""

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(name="supervisor", daemon=True)
        self.supervisor = supervisor
        self.gave_up: GaveUp | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                self.supervisor.check()
            except GaveUp as exc:
                self.gave_up = exc
                return


def run_demo(data_dir: Path, limit: int) -> int:
    """Run the demo; return the process exit code (0 on success)."""
    console = Console()
    try:
        stack = EmbeddedStack(data_dir, Ports.from_env(), cpus=cpus_from_env())
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        return 2
    console.print(
        f"starting embedded PostgreSQL, Redis, the three services and a worker (logs in {data_dir / 'logs'}) ..."
    )
    started = time.perf_counter()
    try:
        stack.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        # The first line names the service and its log; the rest is the log's tail, which the
        # log itself shows better.
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        console.print(f"[red]demo failed while starting the stack:[/] {first_line}", highlight=False)
        return 1
    console.print(f"all services SERVING after {time.perf_counter() - started:.1f}s")
    supervisor = _SupervisorThread(Supervisor(stack, notify=lambda message: console.print(f"[yellow]{message}[/]")))
    supervisor.start()
    try:
        asyncio.run(_run(f"127.0.0.1:{stack.ports.api}", limit, console))
    except (IndexingFailed, UploadFailed, grpc.aio.AioRpcError) as exc:
        if isinstance(exc, grpc.aio.AioRpcError):
            details, code = exc.details() or "", exc.code()
        else:
            details, code = (exc.details if isinstance(exc, IndexingFailed) else str(exc)), exc.code
        service = responsible_service(details)
        if supervisor.gave_up is not None:
            console.print(f"[red]demo failed:[/] {supervisor.gave_up}", highlight=False)
        else:
            console.print(
                f"[red]demo failed:[/] the api answered {code.name}: {details}\n"
                f"The {service} service looks responsible; its log: {stack.log_path(service)}",
                highlight=False,
            )
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    finally:
        supervisor.stopping.set()
        supervisor.join()
        stack.stop()
        console.print("stopped PostgreSQL, Redis and the services")
    return 0
