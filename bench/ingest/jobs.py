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

For a corpus too large to pass through everything four times (1M short texts take hours on two
cores), `--job-passes 1 --alone-sample N` runs (a) (b) (a) with the embedder alone on a random
sample of N of the same documents, and compares throughputs (texts per second). The job path's
rate is also printed by tenth of the load, which shows whether it slows as the collection grows.

`--embedder-cpus 0` pins the embedder to CPU 0 and every other process (PostgreSQL, Redis, the
other services, this client) to the remaining CPUs, for both (a) and (b): the target's premise,
database writes overlapping embedding, measured where the embedder has cores of its own, as it
does on its own nodes in compose or Kubernetes.
Usage:
  .venv/bin/python bench/ingest/jobs.py [--scifact 1000] [--synthetic 20000] [--embedder-cpus 0]
  .venv/bin/python bench/ingest/jobs.py --scifact 0 --synthetic 1000000 --job-passes 1 --alone-sample 100000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from meshsearch.api.v1 import api_pb2 as pb  # noqa: E402
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc  # noqa: E402
from meshsearch.client.uploads import upload  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2 as epb  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2_grpc as epb_grpc  # noqa: E402
from meshsearch.search.v1 import search_pb2 as spb  # noqa: E402
from meshsearch.search.v1 import search_pb2_grpc as spb_grpc  # noqa: E402
from meshsearch_api.settings import ApiSettings, WorkerSettings  # noqa: E402
from meshsearch_cli.indexing import refusal_delay  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports, cpu_list, embedder_apart  # noqa: E402
from meshsearch_harness.datasets import SHARED_DATA, document_text, scifact_corpus, scifact_queries  # noqa: E402
from meshsearch_harness.embedder_account import EmbedderAccount, read_embedder_account  # noqa: E402
from meshsearch_harness.figures import cpu_description, percentile  # noqa: E402
from meshsearch_harness.processes import cpu_between, cpu_seconds, server_cpu  # noqa: E402

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


def cpu_readings(stack: EmbeddedStack) -> dict[str, dict[int, float]]:
    """CPU seconds (user + system) so far of each process group of the stack, by process: each
    service (with its ended children), and PostgreSQL (the postmaster with its ended backends,
    and every live one). Two readings subtract with `cpu_split`."""
    readings = {
        name: {process.pid: cpu_seconds(process.pid, with_exited_children=True)}
        for name, process in stack.processes.items()
    }
    if (stack.pgdata("postgres") / "postmaster.pid").exists():
        readings["postgres"] = server_cpu(stack.pgdata("postgres"))
    return readings


def embedder_account(stack: EmbeddedStack) -> EmbedderAccount:
    return read_embedder_account(stack.ports.embedder_metrics)


def cpu_split(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> str:
    used = {name: cpu_between(before.get(name, {}), reading) for name, reading in after.items()}
    total = sum(used.values()) or 1.0
    shares = ", ".join(f"{name} {100 * s / total:.0f}%" for name, s in sorted(used.items(), key=lambda i: -i[1]))
    return f"{total:.1f} CPU-s: {shares}"


@dataclass
class JobRun:
    """One pass of the job path: how long it took, the finished job, and its progress over time."""

    seconds: float
    job: pb.Job
    progress: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, done)
    index_build_s: float = 0.0  # from the job's end until its collection's HNSW index is ready

    def rates_by_tenth(self) -> list[float]:
        """Documents per second over each tenth of the documents stored. Progress arrives in
        steps of whole batches, so the moment each tenth was reached is interpolated between
        the reports around it."""
        total = self.job.done
        points = [(0.0, 0), *self.progress, (self.seconds, total)]
        reached: list[float] = [0.0]
        for tenth in range(1, 11):
            goal = total * tenth / 10
            after = next(i for i, (_, done) in enumerate(points) if done >= goal)
            (s0, d0), (s1, d1) = points[max(after - 1, 0)], points[after]
            reached.append(s1 if d1 == d0 else s0 + (s1 - s0) * (goal - d0) / (d1 - d0))
        return [total / 10 / max(end - start, 1e-9) for start, end in itertools.pairwise(reached)]


async def index_ready(search: spb_grpc.VectorStoreServiceStub, collection: str) -> float:
    """Seconds until `collection`'s index is ready. A job into an empty collection defers its
    index and has it built when it ends; waiting for the build keeps it out of the next timing."""
    started = time.perf_counter()
    request = spb.GetCollectionRequest(name=collection)
    while (await search.GetCollection(request, timeout=30)).collection.index_state != spb.INDEX_STATE_READY:
        await asyncio.sleep(1.0)
    return time.perf_counter() - started


async def job_path(
    channel: grpc.aio.Channel,
    documents: list[pb.Document],
    search: spb_grpc.VectorStoreServiceStub,
    report_every_s: float = 60.0,
) -> JobRun:
    """Upload through StartIngest and follow the job, from its first acknowledgement, until it
    ends, then wait for its collection's index; a progress line goes to stderr every
    `report_every_s` so that a run of hours can be watched."""
    name = f"bench_{uuid.uuid4().hex[:8]}"
    await pb_grpc.CollectionServiceStub(channel).CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30
    )
    started = time.perf_counter()
    opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_acknowledged(job_id: str, count: int) -> None:
        if not opened.done():
            opened.set_result(job_id)

    async def follow() -> JobRun:
        run = JobRun(seconds=0.0, job=pb.Job())
        next_report = report_every_s
        stub = pb_grpc.IngestServiceStub(channel)
        async for report in stub.WatchJob(pb.WatchJobRequest(job_id=await opened)):
            run.job = report.job
            elapsed = time.perf_counter() - started
            run.progress.append((elapsed, report.job.done))
            if elapsed >= next_report:
                next_report += report_every_s
                line = f"  {elapsed:7.0f} s: {report.job.done:,} of {len(documents):,} stored"
                print(line, file=sys.stderr, flush=True)
        run.seconds = time.perf_counter() - started
        return run

    follower = asyncio.create_task(follow())
    await upload(channel, documents, collection=name, priority=pb.JOB_PRIORITY_BULK, on_acknowledged=on_acknowledged)
    run = await follower
    run.index_build_s = await index_ready(search, name)
    return run


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


def alone_sample(documents: list[pb.Document], size: int, seed: int = 5) -> list[pb.Document]:
    """The documents the embedder alone is timed on: all of them, or a random sample of `size`."""
    if not size or size >= len(documents):
        return documents
    return random.Random(seed).sample(documents, size)


async def measure(stack: EmbeddedStack, corpora: dict[str, list[pb.Document]], job_passes: int, sample: int) -> None:
    clients = WorkerSettings().concurrency
    print(
        "| corpus | documents | texts embedded | embedder alone: texts, s (a, a) | job path s (b, b) "
        "| job / embedder (throughput) | stored, failed (all job passes) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    latency_rows = []

    def measured(cpu_before: dict[str, dict[int, float]], embedder_before: EmbedderAccount) -> str:
        cpu = cpu_split(cpu_before, cpu_readings(stack))
        return f"{cpu}; embedder: {(embedder_account(stack) - embedder_before).summary()}"

    splits: list[tuple[str, str]] = []
    tenths: list[tuple[str, list[float]]] = []
    builds: list[tuple[str, list[float]]] = []
    async with (
        stack.channel("embedder") as embedder_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as api_channel,
        stack.channel("search") as search_channel,
    ):
        embedder = epb_grpc.EmbedderServiceStub(embedder_channel)
        search = spb_grpc.VectorStoreServiceStub(search_channel)
        # A searchable collection for the latency probe (SciFact claims against 200 abstracts).
        probe = "bench_probe"
        await pb_grpc.CollectionServiceStub(api_channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=probe)), timeout=30
        )
        await job_path(api_channel, list(corpora.values())[0][:200], search)
        await pb_grpc.DocumentServiceStub(api_channel).IndexDocuments(
            pb.IndexDocumentsRequest(collection=probe, documents=list(corpora.values())[0][:64]), timeout=120
        )
        for label, documents in corpora.items():
            timed = alone_sample(documents, sample)
            texts = await chunk_texts(embedder, [d.text for d in timed])
            # Texts the job path embeds: counted when the embedder alone sees every document,
            # estimated from the sample's texts per document otherwise.
            path_texts = len(texts) * len(documents) / len(timed)
            before, inside = cpu_readings(stack), embedder_account(stack)
            a1 = await embedder_alone(embedder, texts, clients)
            splits.append((f"{label}, embedder alone", measured(before, inside)))
            stop = asyncio.Event()
            searcher = asyncio.create_task(search_latencies(api_channel, probe, stop))
            before, inside = cpu_readings(stack), embedder_account(stack)
            runs = [await job_path(api_channel, documents, search)]
            splits.append((f"{label}, job path with the search probe", measured(before, inside)))
            stop.set()
            busy = await searcher
            for _ in range(job_passes - 1):
                before, inside = cpu_readings(stack), embedder_account(stack)
                runs.append(await job_path(api_channel, documents, search))
                splits.append((f"{label}, job path alone", measured(before, inside)))
            a2 = await embedder_alone(embedder, texts, clients)
            stop = asyncio.Event()
            idle_probe = asyncio.create_task(search_latencies(api_channel, probe, stop))
            await asyncio.sleep(min(30.0, len(busy) * SEARCH_EVERY_S))
            stop.set()
            idle = await idle_probe
            alone_s = (a1 + a2) / 2
            path_s = sum(run.seconds for run in runs) / len(runs)
            ratio = (path_texts / path_s) / (len(texts) / alone_s)
            embedded = f"{len(texts):,}" if timed is documents else f"~{path_texts:,.0f}"
            print(
                f"| {label} | {len(documents):,} | {embedded} | {len(texts):,}, {alone_s:.1f} ({a1:.1f}, {a2:.1f}) "
                f"| {path_s:.1f} ({', '.join(f'{run.seconds:.1f}' for run in runs)}) | {ratio:.2f} "
                f"| {sum(run.job.done for run in runs):,}, {sum(run.job.failed for run in runs):,} |",
                flush=True,
            )
            latency_rows.append((label, idle, busy))
            tenths.append((label, runs[0].rates_by_tenth()))
            builds.append((label, [run.index_build_s for run in runs]))
    print()
    print("CPU time by process (a job pass counts its index build):")
    for label, split in splits:
        print(f"- {label}: {split}")
    print()
    print("Job path documents per second, by tenth of the load (first pass):")
    for label, rates in tenths:
        print(f"- {label}: " + ", ".join(f"{rate:.0f}" for rate in rates))
    print()
    print("HNSW index build after the job ended (deferred during the load; not in the job path's time), s:")
    for label, seconds in builds:
        print(f"- {label}: " + ", ".join(f"{s:.1f}" for s in seconds))
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
    parser.add_argument("--job-passes", type=int, choices=(1, 2), default=2, help="job path passes per corpus")
    parser.add_argument(
        "--alone-sample", type=int, default=0, help="time the embedder alone on this many of the documents (0: all)"
    )
    parser.add_argument(
        "--embedder-cpus", type=cpu_list, default=None, help="pin the embedder to these CPUs, the rest elsewhere"
    )
    args = parser.parse_args()
    corpora: dict[str, list[pb.Document]] = {}
    if args.scifact:
        corpus = scifact_corpus()[: args.scifact]
        corpora["SciFact abstracts"] = [pb.Document(id=d["_id"], text=document_text(d)) for d in corpus]
    if args.synthetic:
        texts = synthetic_texts(args.synthetic)
        corpora["synthetic short texts"] = [pb.Document(id=f"s{i}", text=t) for i, t in enumerate(texts)]
    cpus = embedder_apart(args.embedder_cpus) if args.embedder_cpus is not None else {}
    print(f"CPU: {cpu_description()}")
    print(
        f"worker concurrency {WorkerSettings().concurrency}, batch {ApiSettings().ingest_batch_documents} documents; "
        "default settings; embedded stack"
        + (f"; embedder pinned to CPUs {sorted(cpus['embedder'])}, the rest to {sorted(cpus['api'])}" if cpus else "")
    )
    with tempfile.TemporaryDirectory() as workdir:
        stack = EmbeddedStack(Path(workdir), Ports.ephemeral(), cpus=cpus)
        with stack.running():
            if cpus:
                os.sched_setaffinity(0, cpus["api"])  # this client too; its gRPC threads start later
            asyncio.run(measure(stack, corpora, args.job_passes, args.alone_sample))


if __name__ == "__main__":
    main()
