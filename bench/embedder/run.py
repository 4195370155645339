"""Embedder benchmark: does the service outrun in-process sentence-transformers on its fastest
backend, with which backend of its own, and at what quality?

In one run, on the same texts (SciFact claims and abstracts, a 4:1 mix by default, and the
abstracts alone):
  (a) sentence-transformers `encode` in process, as a user who wants speed without a service
      would call it, on each of its backends (torch, onnx, onnx-int8, openvino, openvino-bf16,
      each with the numerics the service would use: inprocess.py), at its best batch size,
      best of 3, measured before and after the services (the mean is used), and its
      single-text latency. It runs in a virtualenv of its own (inprocess-requirements.txt),
      made on first use under .venv-bench-inprocess;
  (b) the embedder service for each backend (default: auto, the default setting, then torch and
      openvino-bf16 named explicitly) under 64 concurrent clients sending 1-4 texts each, on the
      mix and on the abstracts alone; single-text latency idle and under load;
  (c) the quality gate for each service backend: STS-b dev Spearman through the service against
      in-process torch, and mean cosine to in-process torch on the same sentences.
Issue 31's targets, printed as PASS/MISS: auto >= 1.3x the best in-process backend on the mix
and on abstracts; idle single-text p50 <= the best in-process single-text encode; gate: Spearman
within 0.005 of torch and mean cosine >= 0.99. Then where each service run's time went: the
engine's busy share of the wall time and its rate while busy, from the embedder's own metrics;
the service's and the clients' CPU, from /proc; an idle single text split into its parts. Usage:
  .venv/bin/python bench/embedder/run.py [--queries 800] [--passages 200] [--clients 64]
      [--backends auto,openvino-bf16:inference_streams=2] [--inprocess openvino-bf16,onnx-int8]
A service run may name embedder settings after its backend (`backend:setting=value`), so that two
configurations of one backend are measured side by side in one run; a name in capitals is an
environment variable, passed as it is (`openvino-bf16:TOKENIZERS_PARALLELISM=false`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
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
from meshsearch_harness.embedder_account import EmbedderAccount, read_embedder_account  # noqa: E402
from meshsearch_harness.figures import cpu_description, percentile  # noqa: E402
from meshsearch_harness.processes import cpu_seconds  # noqa: E402

HERE = Path(__file__).resolve().parent
INPROCESS_VENV = HERE.parents[1] / ".venv-bench-inprocess"
INPROCESS_BACKENDS = "torch,onnx,onnx-int8,openvino,openvino-bf16"


@dataclass(frozen=True)
class InProcess:
    """One in-process backend's figures (inprocess.py's JSON line)."""

    backend: str
    mix_per_s: float
    mix_batch: int
    abstracts_per_s: float
    abstracts_batch: int
    single_p50_ms: float
    sts_vectors: np.ndarray

    @classmethod
    def parse(cls, line: str) -> InProcess:
        data = json.loads(line)
        return cls(
            data["backend"],
            data["mix"]["texts_per_s"],
            data["mix"]["batch_size"],
            data["abstracts"]["texts_per_s"],
            data["abstracts"]["batch_size"],
            data["single_p50_ms"],
            np.load(data["sts_vectors"]),
        )


def inprocess_python() -> Path:
    """The in-process benchmark's interpreter, its virtualenv made on first use."""
    python = INPROCESS_VENV / "bin" / "python"
    requirements = HERE / "inprocess-requirements.txt"
    stamp = INPROCESS_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != requirements.read_text():
        print(f"making {INPROCESS_VENV} (sentence-transformers with its ONNX and OpenVINO backends) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(INPROCESS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
        stamp.write_text(requirements.read_text())
    return python


def measure_inprocess(backends: list[str], texts_file: Path, workdir: Path) -> dict[str, InProcess]:
    from meshsearch_embedder.settings import default_model_path

    workdir.mkdir(parents=True, exist_ok=True)
    command = [str(inprocess_python()), str(HERE / "inprocess.py"), str(texts_file), default_model_path(), str(workdir)]
    done = subprocess.run([*command, *backends], check=True, capture_output=True, text=True)
    results = [InProcess.parse(line) for line in done.stdout.splitlines() if line.startswith("{")]
    for r in results:
        print(
            f"  in-process {r.backend:14} mix {r.mix_per_s:7.1f} texts/s (batch {r.mix_batch}), "
            f"abstracts {r.abstracts_per_s:6.1f} (batch {r.abstracts_batch}), single p50 {r.single_p50_ms:.2f} ms",
            flush=True,
        )
    return {r.backend: r for r in results}


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


CORES = len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Reading:
    """Running totals at one moment: the clock, the embedder's own account, and the CPU time of
    the service's process and of this one (the benchmark's clients)."""

    at: float
    embedder: EmbedderAccount
    service_cpu_s: float
    client_cpu_s: float

    @classmethod
    def take(cls, stack: EmbeddedStack) -> Reading:
        pid = stack.pid("embedder")
        return cls(
            time.perf_counter(),
            read_embedder_account(stack.ports.embedder_metrics),
            cpu_seconds(pid, with_exited_children=True) if pid else 0.0,
            cpu_seconds(os.getpid()),
        )


@dataclass(frozen=True)
class PhaseSplit:
    """Where one phase's wall time went (issue 31, deliverable 4): how much of it the engine was
    in a forward pass, how fast it ran while it was, and who else used the machine's CPUs."""

    wall_s: float
    embedder: EmbedderAccount
    service_cpu_s: float
    client_cpu_s: float

    @classmethod
    def between(cls, before: Reading, after: Reading) -> PhaseSplit:
        return cls(
            after.at - before.at,
            after.embedder - before.embedder,
            after.service_cpu_s - before.service_cpu_s,
            after.client_cpu_s - before.client_cpu_s,
        )

    def share(self, seconds: float, cores: int = 1) -> float:
        """`seconds` as a percentage of this phase's wall time on `cores` CPUs."""
        return 100 * seconds / (self.wall_s * cores) if self.wall_s else 0.0


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
    round_trip_p50: float  # an Info call: what gRPC costs before any embedding
    idle_mean: float
    splits: dict[str, PhaseSplit]  # idle single texts, the mix and the abstracts under load


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
        splits = {}
        before = Reading.take(stack)
        idle = await single_text_latencies(stub, 100)
        splits["idle"] = PhaseSplit.between(before, Reading.take(stack))
        round_trips = []
        for _ in range(100):  # the floor of any call: the gRPC round trip to this process
            started = time.perf_counter()
            await stub.Info(pb.InfoRequest(), timeout=30)
            round_trips.append((time.perf_counter() - started) * 1000)
        before = Reading.take(stack)
        rate = await load(stub, work.mix, work.clients)
        after_mix = Reading.take(stack)
        splits["mix"] = PhaseSplit.between(before, after_mix)
        abstracts_rate = await load(stub, work.abstracts, work.clients)
        splits["abstracts"] = PhaseSplit.between(after_mix, Reading.take(stack))
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
        percentile(round_trips, 50),
        sum(idle) / len(idle),
        splits,
    )


def service_env(run: str) -> dict[str, str]:
    """A service run named `backend[:setting=value...]`, e.g. `openvino-bf16:inference_streams=2`:
    the backend, then any embedder settings (docs/configuration.md) that run differs by. A name
    in capitals is an environment variable passed as it is (`TOKENIZERS_PARALLELISM=false`)."""
    backend, *settings = run.split(":")
    env = {"MESHSEARCH_EMBEDDER_BACKEND": backend}
    for setting in settings:
        name, _, value = setting.partition("=")
        env[name if name.isupper() else f"MESHSEARCH_EMBEDDER_{name.upper()}"] = value
    return env


def run_service(run: str, workdir: Path, work: Workload) -> ServiceResult:
    # A cache of its own: ONNX files are built and auto measures its candidates in this run.
    directory = workdir / run.replace(":", "_").replace("=", "-")
    env = service_env(run) | {"MESHSEARCH_EMBEDDER_ONNX_CACHE_DIR": str(directory / "onnx")}
    stack = EmbeddedStack(directory, Ports.ephemeral(), extra_env=env)
    with stack.running(services=("embedder",), timeout_s=900):
        return asyncio.run(measure_service(stack, work))


def sts_spearman(vectors: np.ndarray, pairs: list[tuple[str, str, float]]) -> float:
    left, right = vectors[: len(pairs)], vectors[len(pairs) :]
    return float(spearmanr((left * right).sum(axis=1), [gold for _, _, gold in pairs]).statistic)


def averaged(before: dict[str, InProcess], after: dict[str, InProcess]) -> dict[str, InProcess]:
    """Each in-process backend's mean of its runs before and after the services."""
    return {
        name: InProcess(
            name,
            (b.mix_per_s + after[name].mix_per_s) / 2,
            b.mix_batch,
            (b.abstracts_per_s + after[name].abstracts_per_s) / 2,
            b.abstracts_batch,
            (b.single_p50_ms + after[name].single_p50_ms) / 2,
            b.sts_vectors,
        )
        for name, b in before.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=800)
    parser.add_argument("--passages", type=int, default=200)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument(
        "--backends",
        default="auto,torch,openvino-bf16",
        help="the service's runs, one each: backend[:setting=value...], e.g. openvino-bf16:inference_streams=2",
    )
    parser.add_argument("--inprocess", default=INPROCESS_BACKENDS, help="in-process sentence-transformers backends")
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
    inprocess = [name for name in args.inprocess.split(",") if name]
    if "torch" not in inprocess:
        inprocess.insert(0, "torch")  # the quality reference
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        texts_file = Path(workdir) / "texts.json"
        texts_file.write_text(json.dumps({"mix": work.mix, "abstracts": work.abstracts, "sts": work.sts_sentences}))
        print("(a) in-process sentence-transformers, before the services:", flush=True)
        before = measure_inprocess(inprocess, texts_file, Path(workdir) / "inprocess")
        for backend in args.backends.split(","):
            print(f"service, backend={backend}, {args.clients} clients x 1-4 texts ...", flush=True)
            results[backend] = run_service(backend, Path(workdir), work)
        print("(a) again, after the services:", flush=True)
        after = measure_inprocess(inprocess, texts_file, Path(workdir) / "inprocess")
    baselines = averaged(before, after)
    reference = baselines["torch"].sts_vectors
    torch_spearman = sts_spearman(reference, work.sts)
    best_mix = max(baselines.values(), key=lambda b: b.mix_per_s)
    best_abstracts = max(baselines.values(), key=lambda b: b.abstracts_per_s)
    best_single = min(baselines.values(), key=lambda b: b.single_p50_ms)
    torch_mix, torch_abstracts = baselines["torch"].mix_per_s, baselines["torch"].abstracts_per_s
    print()
    print(f"CPU: {cpu_description()}")
    print(f"refusals (RESOURCE_EXHAUSTED, retried after RetryInfo): {REFUSALS['count']}")
    print(
        f"ratios: × best in-process (mix: {best_mix.backend}, abstracts: {best_abstracts.backend}); "
        f"single-text latency × the fastest in-process single encode ({best_single.backend})"
    )
    print(
        "| run | backend | mix texts/s | × torch | × best | abstracts/s | × torch | × best "
        "| single-text idle p50 / p99 ms | × in-process | loaded p50 / p99 ms | STS-b dev Spearman "
        "| mean cosine to torch |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b in baselines.values():
        cosine = float((b.sts_vectors * reference).sum(axis=1).mean())
        print(
            f"| in-process, batch {b.mix_batch}/{b.abstracts_batch} | {b.backend} | {b.mix_per_s:.1f} "
            f"({before[b.backend].mix_per_s:.1f}, {after[b.backend].mix_per_s:.1f}) | {b.mix_per_s / torch_mix:.2f} "
            f"| {b.mix_per_s / best_mix.mix_per_s:.2f} | {b.abstracts_per_s:.1f} "
            f"| {b.abstracts_per_s / torch_abstracts:.2f} "
            f"| {b.abstracts_per_s / best_abstracts.abstracts_per_s:.2f} | {b.single_p50_ms:.2f} "
            f"| {b.single_p50_ms / best_single.single_p50_ms:.2f} | | {sts_spearman(b.sts_vectors, work.sts):.4f} "
            f"| {cosine:.4f} |"
        )
    for backend, result in results.items():
        cosine = float((result.vectors * reference).sum(axis=1).mean())
        print(
            f"| service, {backend} | {result.info.backend} on {result.info.device} | {result.texts_per_s:.1f} "
            f"| {result.texts_per_s / torch_mix:.2f} | {result.texts_per_s / best_mix.mix_per_s:.2f} "
            f"| {result.abstracts_per_s:.1f} | {result.abstracts_per_s / torch_abstracts:.2f} "
            f"| {result.abstracts_per_s / best_abstracts.abstracts_per_s:.2f} "
            f"| {result.idle_p50:.2f} / {result.idle_p99:.2f} | {result.idle_p50 / best_single.single_p50_ms:.2f} "
            f"| {result.load_p50:.1f} / {result.load_p99:.1f} | {sts_spearman(result.vectors, work.sts):.4f} "
            f"| {cosine:.4f} |"
        )
    for backend, result in results.items():
        print(f"service, {backend}: idle Info round trip p50 {result.round_trip_p50:.2f} ms (gRPC alone)")
    report_time_split(results, best_mix, best_abstracts, best_single)
    if "auto" in results:
        report_auto(results["auto"], best_mix, best_abstracts, best_single, reference, torch_spearman, work)


def report_time_split(
    results: dict[str, ServiceResult], best_mix: InProcess, best_abstracts: InProcess, best_single: InProcess
) -> None:
    """Where each service run's time went under load, from the embedder's own metrics and /proc:
    the engine's busy share of the wall time and its rate while busy (the ceiling batching alone
    could reach: busy 100% of the time), and the CPU the rest of the service and the clients took."""
    print()
    print(
        f"where the time goes on {CORES} CPUs (engine: forward passes, from the embedder's /metrics; tokenizing "
        "per call includes its wait for a tokenizer thread; CPU % of all CPUs over the phase, from /proc):"
    )
    print(
        "| service run | phase | wall s | engine busy % of wall | engine texts/s while busy | × best in-process "
        "| rows / pass | padding efficiency | tokenizing ms / call | service CPU % | clients CPU % |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backend, result in results.items():
        for phase, best in (("mix", best_mix.mix_per_s), ("abstracts", best_abstracts.abstracts_per_s)):
            split = result.splits[phase]
            engine = split.embedder
            print(
                f"| {backend} | {phase} | {split.wall_s:.2f} | {split.share(engine.inference_s):.0f} "
                f"| {engine.engine_texts_per_s:.1f} | {engine.engine_texts_per_s / best:.2f} "
                f"| {engine.rows_per_pass:.1f} | {engine.padding_efficiency:.2f} "
                f"| {1000 * engine.tokenize_s / max(engine.tokenize_calls, 1):.2f} "
                f"| {split.share(split.service_cpu_s, CORES):.0f} "
                f"| {split.share(split.client_cpu_s, CORES):.0f} |"
            )
    for backend, result in results.items():
        idle = result.splits["idle"].embedder
        forward = 1000 * idle.inference_s / max(idle.passes, 1)
        tokenizing = 1000 * idle.tokenize_s / max(idle.tokenize_calls, 1)
        rest = result.idle_mean - forward - tokenizing - result.round_trip_p50
        print(
            f"service, {backend}: idle single text, mean {result.idle_mean:.2f} ms = forward pass {forward:.2f} "
            f"+ tokenizing {tokenizing:.2f} + gRPC round trip (Info p50) {result.round_trip_p50:.2f} "
            f"+ the rest (queue hand-offs, encoding the reply) {rest:.2f}; in-process {best_single.backend} "
            f"single encode p50 {best_single.single_p50_ms:.2f} ms"
        )


def report_auto(
    auto: ServiceResult,
    best_mix: InProcess,
    best_abstracts: InProcess,
    best_single: InProcess,
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
    mix, abstracts = auto.texts_per_s / best_mix.mix_per_s, auto.abstracts_per_s / best_abstracts.abstracts_per_s
    single = auto.idle_p50 / best_single.single_p50_ms
    checks = [
        (f"mix >= 1.3x in-process {best_mix.backend}", mix, mix >= 1.3),
        (f"abstracts >= 1.3x in-process {best_abstracts.backend}", abstracts, abstracts >= 1.3),
        (f"idle single-text p50 <= in-process {best_single.backend}'s", single, single <= 1.0),
        ("gate: |Spearman - torch| <= 0.005", gap, gap <= 0.005),
        ("gate: mean cosine to torch >= 0.99", cosine, cosine >= 0.99),
    ]
    print("issue 31 targets, auto backend:")
    for name, value, ok in checks:
        print(f"  {name}: {value:.4f} {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
