"""Job-path benchmark: does a durable ingest job (StartIngest -> staging -> workers -> embedder
-> search) keep up with the embedder alone, and do searches stay fast during a bulk load?

In one run, on the same texts, in the order (a) (b) (b) (a) so that a drifting machine favours
neither side:
  (a) the embedder alone: the texts the job path embeds (each document's chunks, cut by the
      embedder's own Tokenize), sent to Embed in batches of 128 by as many clients as the
      worker runs batches at once;
  (b) the job path: upload through StartIngest, until the job is COMPLETED (database writes
      overlap embedding).
During the first (b) a searcher sends one vector search every 0.5 s; its latency is compared
with the same searches on the idle mesh. Corpora: SciFact abstracts (long: chunked) and
synthetic short texts (sentences drawn from STS-b words). Target: (b)/(a) >= 0.9.
Usage:
  .venv/bin/python bench/ingest/jobs.py [--scifact 1000] [--synthetic 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import SHARED_DATA, document_text, percentile, scifact_corpus, scifact_queries  # noqa: E402
from machine import cpu_description  # noqa: E402

from meshsearch.api.v1 import api_pb2 as pb  # noqa: E402
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc  # noqa: E402
from meshsearch.client.uploads import upload  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2 as epb  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2_grpc as epb_grpc  # noqa: E402
from meshsearch_api.settings import ApiSettings, WorkerSettings  # noqa: E402
from meshsearch_cli.indexing import refusal_delay  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports  # noqa: E402

EMBED_BATCH = 128
TOKENIZE_BATCH = 256
SEARCH_EVERY_S = 0.5


def synthetic_texts(count: int, seed: int = 11) -> list[str]:
    """Short texts of 6-14 words drawn from the STS-b vocabulary: real words, new sentences."""
    import csv

    words: list[str] = []
    with (SHARED_DATA / "stsbenchmark" / "sts-train.csv").open(encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 7:
                words.extend(w for w in row[5].split() if w.isalpha())
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(6, 14))) for _ in range(count)]


async def chunk_texts(embedder: epb_grpc.EmbedderServiceStub, texts: list[str]) -> list[str]:
    """The texts the job path embeds: whole texts, or their windows when longer than the model's."""
    probe = await embedder.Tokenize(epb.TokenizeRequest(texts=["."]), timeout=30)
    window = probe.max_tokens - probe.special_tokens
    pieces: list[str] = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        batch = texts[start : start + TOKENIZE_BATCH]
        answer = await embedder.Tokenize(
            epb.TokenizeRequest(texts=batch, chunk_tokens=window, chunk_overlap_tokens=32), timeout=60
        )
        for text, chunks in zip(batch, answer.chunks, strict=True):
            spans = list(zip(chunks.starts, chunks.ends, strict=True))
            pieces.extend([text] if len(spans) <= 1 else [text[s:e] for s, e in spans])
    return pieces


async def embedder_alone(embedder: epb_grpc.EmbedderServiceStub, texts: list[str], clients: int) -> float:
    """Texts per second of the embedder alone, with `clients` concurrent callers."""
    batches = [texts[i : i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def client() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            while True:
                try:
                    await embedder.Embed(
                        epb.EmbedRequest(texts=batch, options=epb.EmbedOptions(background=True)), timeout=300
                    )
                    break
                except grpc.aio.AioRpcError as error:
                    if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    await asyncio.sleep(refusal_delay(error))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - started


def cpu_seconds(stack: EmbeddedStack) -> dict[str, float]:
    """CPU time (user + system) so far of each process group of the stack: the services, and
    PostgreSQL (the postmaster and its backends)."""
    import psutil

    groups: dict[str, list[psutil.Process]] = {}
    for name, process in stack.processes.items():
        groups[name] = [psutil.Process(process.pid)]
    postmaster = stack._postgres.get_pid() if stack._postgres is not None else None  # type: ignore[attr-defined]
    if postmaster:
        root = psutil.Process(postmaster)
        groups["postgres"] = [root, *root.children(recursive=True)]
    totals: dict[str, float] = {}
    for name, processes in groups.items():
        total = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
            except psutil.NoSuchProcess:
                pass
        totals[name] = total
    return totals


def cpu_split(before: dict[str, float], after: dict[str, float]) -> str:
    used = {name: after.get(name, 0.0) - before.get(name, 0.0) for name in after}
    total = sum(used.values()) or 1.0
    shares = ", ".join(f"{name} {100 * s / total:.0f}%" for name, s in sorted(used.items(), key=lambda i: -i[1]))
    return f"{total:.1f} CPU-s: {shares}"


async def job_path(channel: grpc.aio.Channel, documents: list[pb.Document]) -> tuple[float, pb.Job]:
    """Seconds from the start of the upload until the job completed, and the job."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    await pb_grpc.CollectionServiceStub(channel).CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30
    )
    started = time.perf_counter()
    result = await upload(channel, documents, collection=name, priority=pb.JOB_PRIORITY_BULK)
    stub = pb_grpc.IngestServiceStub(channel)
    job = pb.Job()
    async for report in stub.WatchJob(pb.WatchJobRequest(job_id=result.job_id)):
        job = report.job
    return time.perf_counter() - started, job


async def search_latencies(channel: grpc.aio.Channel, collection: str, stop: asyncio.Event) -> list[float]:
    stub = pb_grpc.SearchServiceStub(channel)
    claims = [q["text"] for q in scifact_queries()]
    latencies: list[float] = []
    index = 0
    while not stop.is_set():
        started = time.perf_counter()
        await stub.Search(
            pb.SearchRequest(collection=collection, query=claims[index % len(claims)], top_k=10), timeout=30
        )
        latencies.append(time.perf_counter() - started)
        index += 1
        await asyncio.sleep(SEARCH_EVERY_S)
    return latencies


async def measure(stack: EmbeddedStack, corpora: dict[str, list[pb.Document]]) -> None:
    clients = WorkerSettings().concurrency
    print(
        "| corpus | documents | texts embedded | embedder alone s (a, a) | job path s (b, b) "
        "| job / embedder (throughput) | stored, failed (both job passes) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    latency_rows = []
    splits: list[tuple[str, str]] = []
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.embedder}") as embedder_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as api_channel,
    ):
        embedder = epb_grpc.EmbedderServiceStub(embedder_channel)
        # A searchable collection for the latency probe (SciFact claims against 200 abstracts).
        probe = "bench_probe"
        await pb_grpc.CollectionServiceStub(api_channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=probe)), timeout=30
        )
        await job_path(api_channel, list(corpora.values())[0][:200])
        await pb_grpc.DocumentServiceStub(api_channel).IndexDocuments(
            pb.IndexDocumentsRequest(collection=probe, documents=list(corpora.values())[0][:64]), timeout=120
        )
        for label, documents in corpora.items():
            texts = await chunk_texts(embedder, [d.text for d in documents])
            before = cpu_seconds(stack)
            a1 = await embedder_alone(embedder, texts, clients)
            splits.append((f"{label}, embedder alone", cpu_split(before, cpu_seconds(stack))))
            stop = asyncio.Event()
            searcher = asyncio.create_task(search_latencies(api_channel, probe, stop))
            before = cpu_seconds(stack)
            b1, job1 = await job_path(api_channel, documents)
            splits.append((label, cpu_split(before, cpu_seconds(stack))))
            stop.set()
            busy = await searcher
            b2, job2 = await job_path(api_channel, documents)
            a2 = await embedder_alone(embedder, texts, clients)
            stop = asyncio.Event()
            idle_probe = asyncio.create_task(search_latencies(api_channel, probe, stop))
            await asyncio.sleep(min(30.0, len(busy) * SEARCH_EVERY_S))
            stop.set()
            idle = await idle_probe
            alone_s, path_s = (a1 + a2) / 2, (b1 + b2) / 2
            print(
                f"| {label} | {len(documents):,} | {len(texts):,} | {alone_s:.1f} ({a1:.1f}, {a2:.1f}) "
                f"| {path_s:.1f} ({b1:.1f}, {b2:.1f}) | {alone_s / path_s:.2f} "
                f"| {job1.done + job2.done:,}, {job1.failed + job2.failed:,} |",
                flush=True,
            )
            latency_rows.append((label, idle, busy))
    print()
    print("CPU time of the job path, by process (both cores are shared by all of them):")
    for label, split in splits:
        print(f"- {label}: {split}")
    print()
    print("| search latency, ms | idle p50 | idle p99 | during bulk load p50 | during bulk load p99 | searches |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, idle, busy in latency_rows:
        print(
            f"| {label} | {percentile(idle, 50) * 1000:.1f} | {percentile(idle, 99) * 1000:.1f} "
            f"| {percentile(busy, 50) * 1000:.1f} | {percentile(busy, 99) * 1000:.1f} | {len(idle)}, {len(busy)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scifact", type=int, default=1000, help="SciFact abstracts (0 skips them)")
    parser.add_argument("--synthetic", type=int, default=20000, help="synthetic short texts (0 skips them)")
    args = parser.parse_args()
    corpora: dict[str, list[pb.Document]] = {}
    if args.scifact:
        corpus = scifact_corpus()[: args.scifact]
        corpora["SciFact abstracts"] = [pb.Document(id=d["_id"], text=document_text(d)) for d in corpus]
    if args.synthetic:
        texts = synthetic_texts(args.synthetic)
        corpora["synthetic short texts"] = [pb.Document(id=f"s{i}", text=t) for i, t in enumerate(texts)]
    print(f"CPU: {cpu_description()}")
    print(
        f"worker concurrency {WorkerSettings().concurrency}, batch {ApiSettings().ingest_batch_documents} documents; "
        "default settings; embedded stack"
    )
    with tempfile.TemporaryDirectory() as workdir:
        stack = EmbeddedStack(Path(workdir), Ports.ephemeral())
        try:
            stack.start()
            asyncio.run(measure(stack, corpora))
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
