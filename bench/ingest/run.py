"""Ingest benchmark: does indexing through the public api keep up with the embedder alone?

In one run, on the same SciFact abstracts, in the same batches, for each number of concurrent
writers N, in the order (a) (b) (b) (a), so that a machine whose speed drifts (this one's does,
by up to 2.7x within minutes) favours neither side:
  (a) the embedder alone: N clients call the embedder's Embed directly;
  (b) the whole path: N writers call the api's IndexDocuments (Redis cache flushed first, a fresh
      collection each pass), retrying RESOURCE_EXHAUSTED after its RetryInfo delay as every
      client the project ships does;
and once (c) the adaptive client the demo uses, which sizes its own concurrency from the
server's load reports. Prints docs/s, the ratio (b)/(a), refusals retried and failed documents,
beside the CPU model and its flags. Target: (b)/(a) >= 0.85 at every N, zero failed documents.
Usage:
  .venv/bin/python bench/ingest/run.py [--limit 300] [--batch 16] [--writers 1,4,16,32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import grpc
import redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from meshsearch.api.v1 import api_pb2 as pb  # noqa: E402
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2 as epb  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2_grpc as epb_grpc  # noqa: E402
from meshsearch_cli.indexing import Indexer, refusal_delay  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports  # noqa: E402
from meshsearch_harness.datasets import document_text, scifact_corpus  # noqa: E402
from meshsearch_harness.figures import cpu_description  # noqa: E402

CALL_TIMEOUT_S = 300.0


async def run_writers(count: int, batches: list[list[pb.Document]], index_one) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """docs/s with `count` concurrent writers sharing the batches, and the failed documents."""
    queue: asyncio.Queue[list[pb.Document]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)
    failed = 0

    async def writer() -> None:
        nonlocal failed
        while not queue.empty():
            failed += await index_one(queue.get_nowait())

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(count)))
    return sum(len(b) for b in batches) / (time.perf_counter() - started), failed


class EmbedderAlone:
    """Embeds each batch's texts directly, retrying RESOURCE_EXHAUSTED like the api's writers."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.stub = epb_grpc.EmbedderServiceStub(channel)
        self.refused = 0

    async def __call__(self, batch: list[pb.Document]) -> int:
        request = epb.EmbedRequest(texts=[d.text for d in batch])
        while True:
            try:
                await self.stub.Embed(request, timeout=CALL_TIMEOUT_S)
                return 0
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    print(f"  embedder failed: {error.code().name} {error.details()}", flush=True)
                    return len(batch)
                self.refused += 1
                await asyncio.sleep(refusal_delay(error))


async def fresh_indexer(channel: grpc.aio.Channel, redis_url: str) -> Indexer:
    """An Indexer for a new, empty collection, with the embedding cache emptied first."""
    redis.Redis.from_url(redis_url).flushall()
    name = f"ingest_{uuid.uuid4().hex[:8]}"
    await pb_grpc.CollectionServiceStub(channel).CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30
    )
    return Indexer(pb_grpc.DocumentServiceStub(channel), name, call_timeout_s=CALL_TIMEOUT_S)


def through_api(indexer: Indexer):  # type: ignore[no-untyped-def]
    async def index_one(batch: list[pb.Document]) -> int:
        response = await indexer.index_batch(batch)
        return len(batch) - response.indexed_count

    return index_one


async def measure(stack: EmbeddedStack, batches: list[list[pb.Document]], writer_counts: list[int]) -> None:
    docs = sum(len(b) for b in batches)
    print(
        "| writers | embedder alone docs/s (a, a) | through the api docs/s (b, b) | api / embedder "
        "| refusals retried (embedder, api) | failed docs |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    async with (
        stack.channel("embedder") as embedder_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as api_channel,
    ):
        warmup = await fresh_indexer(api_channel, stack.redis_url)
        await warmup.index_batch(batches[0])

        async def embedder_alone(count: int) -> tuple[float, int, int]:
            alone = EmbedderAlone(embedder_channel)
            rate, failed = await run_writers(count, batches, alone)
            return rate, failed, alone.refused

        async def fixed_writers(count: int) -> tuple[float, int, int]:
            indexer = await fresh_indexer(api_channel, stack.redis_url)
            rate, failed = await run_writers(count, batches, through_api(indexer))
            return rate, failed, indexer.stats.refused

        async def adaptive_client(_: int) -> tuple[float, int, int]:
            indexer = await fresh_indexer(api_channel, stack.redis_url)
            stored = 0

            def count_stored(batch: list[pb.Document], response: pb.IndexDocumentsResponse) -> None:
                nonlocal stored
                stored += response.indexed_count

            started = time.perf_counter()
            await indexer.run(batches, count_stored)
            return docs / (time.perf_counter() - started), docs - stored, indexer.stats.refused

        rows = [(str(count), count, fixed_writers) for count in writer_counts]
        rows.append(("adaptive (the demo's client) vs 4", 4, adaptive_client))
        for label, count, api_side in rows:
            a1 = await embedder_alone(count)
            b1 = await api_side(count)
            b2 = await api_side(count)
            a2 = await embedder_alone(count)
            alone_rate, api_rate = (a1[0] + a2[0]) / 2, (b1[0] + b2[0]) / 2
            print(
                f"| {label} | {alone_rate:.2f} ({a1[0]:.2f}, {a2[0]:.2f}) | {api_rate:.2f} ({b1[0]:.2f}, {b2[0]:.2f}) "
                f"| {api_rate / alone_rate:.2f} | {a1[2] + a2[2]}, {b1[2] + b2[2]} | {a1[1] + a2[1] + b1[1] + b2[1]} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=300, help="SciFact abstracts to index per pass")
    parser.add_argument("--batch", type=int, default=16, help="documents per call")
    parser.add_argument("--writers", default="1,4,16,32", help="concurrent writers, comma-separated")
    args = parser.parse_args()
    corpus = scifact_corpus()[: args.limit]
    documents = [pb.Document(id=d["_id"], text=document_text(d)) for d in corpus]
    batches = [documents[i : i + args.batch] for i in range(0, len(documents), args.batch)]
    print(f"CPU: {cpu_description()}")
    print(f"{len(documents)} SciFact abstracts in batches of {args.batch}; default settings; embedded stack")
    with tempfile.TemporaryDirectory() as workdir:
        stack = EmbeddedStack(Path(workdir), Ports.ephemeral())
        with stack.running():
            asyncio.run(measure(stack, batches, [int(n) for n in args.writers.split(",")]))


if __name__ == "__main__":
    main()
