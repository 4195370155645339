"""Embedder benchmark: does the service outrun in-process sentence-transformers?

In one run, on the same texts (SciFact claims and abstracts, a 4:1 mix by default):
  (a) sentence-transformers `encode` in this process at its best batch size (the baseline);
  (b) the embedder service, torch backend, under 64 concurrent clients sending 1-4 texts each;
  (c) the same with the onnx-int8 backend;
  (d) single-text latency p50/p99, idle and under that load, for each backend.
Throughputs are printed as ratios to (a). Usage:
  .venv/bin/python bench/embedder/run.py [--queries 800] [--passages 200] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from datasets import percentile, query_passage_mix  # noqa: E402
from machine import cpu_description  # noqa: E402

from meshsearch.embedder.v1 import embedder_pb2 as pb  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2_grpc  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports  # noqa: E402


def baseline(texts: list[str], batch_sizes: list[int]) -> tuple[float, int]:
    """Best texts/s of SentenceTransformer.encode over the batch sizes, and that size."""
    from sentence_transformers import SentenceTransformer

    from meshsearch_embedder.settings import default_model_path

    model = SentenceTransformer(default_model_path(), device="cpu")
    model.encode(texts[:64], batch_size=32)  # warm up
    best = (0.0, 0)
    for batch_size in batch_sizes:
        started = time.perf_counter()
        model.encode(texts, batch_size=batch_size)
        rate = len(texts) / (time.perf_counter() - started)
        print(f"  baseline batch_size={batch_size:<4} {rate:7.1f} texts/s", flush=True)
        best = max(best, (rate, batch_size))
    return best


async def single_text_latencies(
    stub: embedder_pb2_grpc.EmbedderServiceStub, count: int, stop: asyncio.Event | None = None
) -> list[float]:
    latencies = []
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        await stub.Embed(pb.EmbedRequest(texts=[f"how do vaccines train the immune system {i}"]))
        latencies.append((time.perf_counter() - started) * 1000)
        if stop is not None:
            await asyncio.sleep(0.05)
    return latencies


async def load(stub: embedder_pb2_grpc.EmbedderServiceStub, texts: list[str], clients: int) -> float:
    """texts/s with `clients` concurrent callers, each sending 1-4 texts per call until done."""
    rng = random.Random(3)
    chunks, position = [], 0
    while position < len(texts):
        size = rng.randint(1, 4)
        chunks.append(texts[position : position + size])
        position += size
    queue: asyncio.Queue[list[str]] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)

    async def client() -> None:
        while not queue.empty():
            chunk = queue.get_nowait()
            await stub.Embed(pb.EmbedRequest(texts=chunk), timeout=120)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(texts) / (time.perf_counter() - started)


async def measure_service(port: int, texts: list[str], clients: int) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        await load(stub, texts[:200], clients)  # warm up
        idle = await single_text_latencies(stub, 100)
        rate = await load(stub, texts, clients)
        stop = asyncio.Event()
        probe = asyncio.create_task(single_text_latencies(stub, 10_000, stop))
        await load(stub, texts, clients)
        stop.set()
        loaded = await probe
    return {
        "texts_per_s": rate,
        "idle_p50": percentile(idle, 50),
        "idle_p99": percentile(idle, 99),
        "load_p50": percentile(loaded, 50),
        "load_p99": percentile(loaded, 99),
        "load_samples": len(loaded),
    }


def run_service(backend: str, texts: list[str], clients: int, workdir: Path) -> dict[str, float]:
    stack = EmbeddedStack(workdir / backend, Ports.ephemeral(), extra_env={"MESHSEARCH_EMBEDDER_BACKEND": backend})
    try:
        stack.start(services=("embedder",), timeout_s=600)
        return asyncio.run(measure_service(stack.ports.embedder, texts, clients))
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=800)
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--backends", default="torch,onnx-int8")
    args = parser.parse_args()
    texts = query_passage_mix(args.queries, args.passages)
    print(f"CPU: {cpu_description()}")
    print(f"{len(texts)} texts ({args.queries} SciFact claims + {args.passages} abstracts)")
    print("(a) in-process sentence-transformers encode:")
    base_rate, base_batch = baseline(texts, [16, 32, 64, 128])
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for backend in args.backends.split(","):
            print(f"service, backend={backend}, {args.clients} clients x 1-4 texts ...", flush=True)
            results[backend] = run_service(backend, texts, args.clients, Path(workdir))
    print()
    print("| run | texts/s | × baseline | idle p50 / p99 ms | loaded p50 / p99 ms |")
    print("|---|---:|---:|---:|---:|")
    print(f"| (a) in-process encode, batch_size={base_batch} | {base_rate:.1f} | 1.00 | | |")
    for backend, result in results.items():
        print(
            f"| service, {backend} | {result['texts_per_s']:.1f} | {result['texts_per_s'] / base_rate:.2f} "
            f"| {result['idle_p50']:.1f} / {result['idle_p99']:.1f} "
            f"| {result['load_p50']:.1f} / {result['load_p99']:.1f} |"
        )


if __name__ == "__main__":
    main()
