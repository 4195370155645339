"""Embedder benchmark: does the service outrun in-process sentence-transformers, with which
backend, and at what quality?

In one run, on the same texts (SciFact claims and abstracts, a 4:1 mix by default, and the
abstracts alone):
  (a) sentence-transformers `encode` in this process at its best batch size (the baseline),
      measured before and after the services (the mean is used), and its single-text latency;
  (b) the embedder service for each backend (default: auto, the default setting, then torch and
      onnx-int8 named explicitly) under 64 concurrent clients sending 1-4 texts each, on the mix
      and on the abstracts alone; single-text latency idle and under load;
  (c) the quality gate for each service backend: STS-b dev Spearman through the service against
      in-process torch, and mean cosine to in-process torch on the same sentences.
Issue 13's targets, printed as PASS/MISS: auto >= 2.0x the baseline on the mix, >= 1.5x on
abstracts, idle single-text p50 <= 1.1x in-process single-text encode; gate: Spearman within
0.005 of torch and mean cosine >= 0.99. Usage:
  .venv/bin/python bench/embedder/run.py [--queries 800] [--passages 200] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scipy.stats import spearmanr  # noqa: E402

from meshsearch.embedder.v1 import embedder_pb2 as pb  # noqa: E402
from meshsearch.embedder.v1 import embedder_pb2_grpc  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports  # noqa: E402
from meshsearch_common.errors import retry_after_of  # noqa: E402
from meshsearch_embedder.settings import EmbedderSettings  # noqa: E402
from meshsearch_harness.datasets import (  # noqa: E402
    document_text,
    query_passage_mix,
    scifact_corpus,
    sts_pairs,  # noqa: E402
)
from meshsearch_harness.figures import cpu_description, percentile  # noqa: E402

BATCH_SIZES = [16, 32, 64, 128]


class Baseline:
    """In-process sentence-transformers on CPU, as a user would call it."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        from meshsearch_embedder.settings import default_model_path

        self.model = SentenceTransformer(default_model_path(), device="cpu")
        self.model.encode(["warm up"] * 64, batch_size=32)

    def best_rate(self, texts: list[str], label: str) -> tuple[float, int]:
        """Best texts/s of encode over BATCH_SIZES, and that size."""
        best = (0.0, 0)
        for batch_size in BATCH_SIZES:
            started = time.perf_counter()
            self.model.encode(texts, batch_size=batch_size)
            rate = len(texts) / (time.perf_counter() - started)
            print(f"  baseline {label} batch_size={batch_size:<4} {rate:7.1f} texts/s", flush=True)
            best = max(best, (rate, batch_size))
        return best

    def single_text_ms(self, count: int = 100) -> list[float]:
        latencies = []
        for i in range(count):
            started = time.perf_counter()
            self.model.encode([f"how do vaccines train the immune system {i}"])
            latencies.append((time.perf_counter() - started) * 1000)
        return latencies

    def unit_vectors(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=64, normalize_embeddings=True))


REFUSALS = {"count": 0}


async def embed(
    stub: embedder_pb2_grpc.EmbedderServiceStub, texts: list[str], timeout: float | None = 120
) -> pb.EmbedResponse:
    """One Embed call, as a well-behaved client makes it: a refusal (RESOURCE_EXHAUSTED, when the
    queue cannot meet the deadline on a busy machine) is retried after the server's RetryInfo
    delay and counted, rather than ending the benchmark."""
    while True:
        try:
            answer: pb.EmbedResponse = await stub.Embed(pb.EmbedRequest(texts=texts), timeout=timeout)
            return answer
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            REFUSALS["count"] += 1
            await asyncio.sleep(retry_after_of(error) or 1.0)


async def single_text_latencies(
    stub: embedder_pb2_grpc.EmbedderServiceStub, count: int, stop: asyncio.Event | None = None
) -> list[float]:
    latencies = []
    for i in range(count):
        if stop is not None and stop.is_set():
            break
        started = time.perf_counter()
        await embed(stub, [f"how do vaccines train the immune system {i}"], timeout=None)
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
            await embed(stub, chunk)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(texts) / (time.perf_counter() - started)


async def embed_all(stub: embedder_pb2_grpc.EmbedderServiceStub, texts: list[str]) -> np.ndarray:
    rows = []
    for start in range(0, len(texts), 64):
        answer = await embed(stub, texts[start : start + 64])
        rows.append(np.frombuffer(answer.embeddings.vectors, dtype="<f4").reshape(-1, answer.embeddings.dimension))
    return np.concatenate(rows)


@dataclass
class ServiceResult:
    info: pb.InfoResponse
    texts_per_s: float
    abstracts_per_s: float
    idle_p50: float
    idle_p99: float
    load_p50: float
    load_p99: float
    vectors: np.ndarray  # unit rows of the STS-b dev sentences (first sentences, then second ones)


@dataclass(frozen=True)
class Workload:
    mix: list[str]
    abstracts: list[str]
    clients: int
    sts: list[tuple[str, str, float]]

    @property
    def sts_sentences(self) -> list[str]:
        return [a for a, _, _ in self.sts] + [b for _, b, _ in self.sts]


async def measure_service(stack: EmbeddedStack, work: Workload) -> ServiceResult:
    async with stack.channel("embedder") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        info = await stub.Info(pb.InfoRequest(), timeout=30)
        await load(stub, work.mix[:200], work.clients)  # warm up
        idle = await single_text_latencies(stub, 100)
        rate = await load(stub, work.mix, work.clients)
        abstracts_rate = await load(stub, work.abstracts, work.clients)
        stop = asyncio.Event()
        probe = asyncio.create_task(single_text_latencies(stub, 10_000, stop))
        await load(stub, work.mix, work.clients)
        stop.set()
        loaded = await probe
        vectors = await embed_all(stub, work.sts_sentences)
    return ServiceResult(
        info,
        rate,
        abstracts_rate,
        percentile(idle, 50),
        percentile(idle, 99),
        percentile(loaded, 50),
        percentile(loaded, 99),
        vectors,
    )


def run_service(backend: str, workdir: Path, work: Workload) -> ServiceResult:
    # A cache of its own: ONNX files are built and auto measures its candidates in this run.
    env = {
        "MESHSEARCH_EMBEDDER_BACKEND": backend,
        "MESHSEARCH_EMBEDDER_ONNX_CACHE_DIR": str(workdir / "onnx" / backend),
    }
    stack = EmbeddedStack(workdir / backend, Ports.ephemeral(), extra_env=env)
    with stack.running(services=("embedder",), timeout_s=900):
        return asyncio.run(measure_service(stack, work))


def sts_spearman(vectors: np.ndarray, pairs: list[tuple[str, str, float]]) -> float:
    left, right = vectors[: len(pairs)], vectors[len(pairs) :]
    return float(spearmanr((left * right).sum(axis=1), [gold for _, _, gold in pairs]).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=800)
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--backends", default="auto,torch,onnx-int8")
    args = parser.parse_args()
    work = Workload(
        query_passage_mix(args.queries, args.passages),
        [document_text(d) for d in random.Random(11).sample(scifact_corpus(), args.passages)],
        args.clients,
        sts_pairs("dev"),
    )
    settings = EmbedderSettings()
    print(f"CPU: {cpu_description()}")
    print(
        f"embedder settings: device {settings.device}, max_batch_size {settings.max_batch_size}, "
        f"max_batch_tokens {settings.max_batch_tokens}, inference_threads {settings.inference_threads or 'all'}"
    )
    print(f"mix: {len(work.mix)} texts ({args.queries} SciFact claims + {args.passages} abstracts)")
    baseline = Baseline()
    print("(a) in-process sentence-transformers encode, before the services:")
    before = baseline.best_rate(work.mix, "mix"), baseline.best_rate(work.abstracts, "abstracts")
    single_before = percentile(baseline.single_text_ms(), 50)
    reference = baseline.unit_vectors(work.sts_sentences)
    torch_spearman = sts_spearman(reference, work.sts)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for backend in args.backends.split(","):
            print(f"service, backend={backend}, {args.clients} clients x 1-4 texts ...", flush=True)
            results[backend] = run_service(backend, Path(workdir), work)
    print("(a) again, after the services:")
    after = baseline.best_rate(work.mix, "mix"), baseline.best_rate(work.abstracts, "abstracts")
    single = (single_before + percentile(baseline.single_text_ms(), 50)) / 2
    mix_rate = (before[0][0] + after[0][0]) / 2
    abstracts_rate = (before[1][0] + after[1][0]) / 2
    print()
    print(f"CPU: {cpu_description()}")
    print(f"refusals (RESOURCE_EXHAUSTED, retried after RetryInfo): {REFUSALS['count']}")
    print(
        "| run | backend | mix texts/s | × baseline | abstracts/s | × baseline | single-text idle p50 / p99 ms "
        "| × in-process | loaded p50 / p99 ms | STS-b dev Spearman | mean cosine to torch |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| (a) in-process encode, best batch (mix {before[0][1]}/{after[0][1]}, "
        f"abstracts {before[1][1]}/{after[1][1]}) "
        f"| torch | {mix_rate:.1f} ({before[0][0]:.1f}, {after[0][0]:.1f}) | 1.00 "
        f"| {abstracts_rate:.1f} ({before[1][0]:.1f}, {after[1][0]:.1f}) | 1.00 | {single:.1f} | 1.00 | "
        f"| {torch_spearman:.4f} | 1.0000 |"
    )
    for backend, result in results.items():
        cosine = float((result.vectors * reference).sum(axis=1).mean())
        print(
            f"| service, {backend} | {result.info.backend} on {result.info.device} | {result.texts_per_s:.1f} "
            f"| {result.texts_per_s / mix_rate:.2f} | {result.abstracts_per_s:.1f} "
            f"| {result.abstracts_per_s / abstracts_rate:.2f} | {result.idle_p50:.1f} / {result.idle_p99:.1f} "
            f"| {result.idle_p50 / single:.2f} | {result.load_p50:.1f} / {result.load_p99:.1f} "
            f"| {sts_spearman(result.vectors, work.sts):.4f} | {cosine:.4f} |"
        )
    if "auto" in results:
        report_auto(results["auto"], mix_rate, abstracts_rate, single, reference, torch_spearman, work)


def report_auto(
    auto: ServiceResult,
    mix_rate: float,
    abstracts_rate: float,
    single: float,
    reference: np.ndarray,
    torch_spearman: float,
    work: Workload,
) -> None:
    selection = auto.info.backend_selection
    print()
    print(f"auto chose {auto.info.backend}: {selection.reason} (cached: {selection.cached}; {selection.cpu})")
    for c in selection.candidates:
        state = "eligible" if c.eligible else c.rejected_because
        print(
            f"  calibration {c.backend}: {c.short_texts_per_second:.1f} short/s, "
            f"{c.long_texts_per_second:.1f} long/s, cosine {c.mean_cosine_to_reference:.4f}, {state}"
        )
    cosine = float((auto.vectors * reference).sum(axis=1).mean())
    gap = abs(sts_spearman(auto.vectors, work.sts) - torch_spearman)
    checks = [
        ("mix >= 2.0x in-process", auto.texts_per_s / mix_rate, auto.texts_per_s / mix_rate >= 2.0),
        (
            "abstracts >= 1.5x in-process",
            auto.abstracts_per_s / abstracts_rate,
            auto.abstracts_per_s / abstracts_rate >= 1.5,
        ),
        ("idle single-text p50 <= 1.1x in-process", auto.idle_p50 / single, auto.idle_p50 / single <= 1.1),
        ("gate: |Spearman - torch| <= 0.005", gap, gap <= 0.005),
        ("gate: mean cosine to torch >= 0.99", cosine, cosine >= 0.99),
    ]
    print("issue 13 targets, auto backend:")
    for name, value, ok in checks:
        print(f"  {name}: {value:.4f} {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
