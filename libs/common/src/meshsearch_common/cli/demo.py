"""`meshsearch demo`: the main job end to end on the embedded default stack.

Starts the stack, indexes the standard library's docstrings through the public api with a
progress bar (skipped when a previous run already indexed them), answers natural-language
queries with ranked, scored results, and stops everything.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_common.cli.corpus import CorpusDocument, stdlib_docstrings
from meshsearch_common.cli.stack import EmbeddedStack, Ports

COLLECTION = "stdlib_docs"
BATCH = 64
CONCURRENT_BATCHES = 4
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


async def _index(stub: pb_grpc.DocumentServiceStub, documents: list[CorpusDocument], console: Console) -> None:
    batches = [documents[i : i + BATCH] for i in range(0, len(documents), BATCH)]
    semaphore = asyncio.Semaphore(CONCURRENT_BATCHES)
    columns = (TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("index", total=len(documents))

        async def send(batch: list[CorpusDocument]) -> None:
            async with semaphore:
                request = pb.IndexDocumentsRequest(collection=COLLECTION)
                for document in batch:
                    message = request.documents.add(id=document.id, text=document.text)
                    message.metadata.update({"module": document.module, "kind": document.kind})
                response = await stub.IndexDocuments(request, timeout=120)
                if response.errors:
                    raise RuntimeError(f"indexing failed for {len(response.errors)} documents: {response.errors[0]}")
                progress.advance(task, len(batch))

        await asyncio.gather(*(send(batch) for batch in batches))


async def _run(address: str, limit: int, console: Console) -> None:
    documents = stdlib_docstrings(limit)
    async with grpc.aio.insecure_channel(address) as channel:
        collections = pb_grpc.CollectionServiceStub(channel)
        try:
            collection = (await collections.GetCollection(pb.GetCollectionRequest(name=COLLECTION))).collection
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            collection = (
                await collections.CreateCollection(
                    pb.CreateCollectionRequest(collection=pb.Collection(name=COLLECTION))
                )
            ).collection
        console.print(
            f"collection [bold]{COLLECTION}[/]: model {collection.model.id} ({collection.model.dimension} dims)"
        )
        if collection.document_count >= len(documents):
            console.print(f"{collection.document_count} documents already indexed by a previous run; skipping indexing")
        else:
            started = time.perf_counter()
            await _index(pb_grpc.DocumentServiceStub(channel), documents, console)
            elapsed = time.perf_counter() - started
            console.print(
                f"indexed {len(documents)} documents in {elapsed:.1f}s ({len(documents) / elapsed:.0f} docs/s)"
            )
        search = pb_grpc.SearchServiceStub(channel)
        for query in QUERIES:
            response = await search.Search(pb.SearchRequest(collection=COLLECTION, query=query, top_k=3), timeout=30)
            console.print(f"\n[bold]query:[/] {query}")
            for rank, hit in enumerate(response.hits, start=1):
                text = hit.document.text if len(hit.document.text) <= 90 else hit.document.text[:87] + "..."
                console.print(f"  {rank}. {hit.score:.3f}  [cyan]{hit.document.id}[/]  {text}", highlight=False)


def run_demo(data_dir: Path, limit: int) -> None:
    console = Console()
    stack = EmbeddedStack(data_dir, Ports.from_env())
    console.print(f"starting embedded PostgreSQL, Redis and the three services (logs in {data_dir / 'logs'}) ...")
    started = time.perf_counter()
    stack.start()
    console.print(f"all services SERVING after {time.perf_counter() - started:.1f}s")
    try:
        asyncio.run(_run(f"127.0.0.1:{stack.ports.api}", limit, console))
    finally:
        stack.stop()
        console.print("stopped PostgreSQL, Redis and the services")
