"""Sharded collections through the search service, against one server holding the same points.

In one run, the search service on an embedded coordinator with N embedded shard servers (all on
this machine, sharing its cores), and two collections of the same vectors: one on the
coordinator's own database, one spread over the N shards. For each:
  - BulkUpsert wall time: the load and the HNSW build (the service builds after an initial load;
    a sharded one builds every shard's index at once, in the load's transactions);
  - one client's queries at the service's default ef_search: recall@10 against exact search
    (numpy), p50 and p99;
  - the same with several clients at once (the sharded plan runs each query's shards together),
    with the CPU each part of the mesh spent per query (coordinator, each shard, search service,
    clients; from /proc), the throughput that CPU predicts on this machine's cores beside the
    measured one (the model's check), and what each shard and the front (coordinator + search
    service) would serve per core of their own: the N-machine model;
  - again for each value of the shards' own ef_search asked for (the search service restarted
    with MESHSEARCH_SEARCH_SHARD_EF_SEARCH), one server measured beside each;
  - one client's queries asking for each ef_search of --query-ef-search (the shards' default
    sessions first): a sharded search reads its shards through an ef_search tier's foreign
    servers (MESHSEARCH_SEARCH_SHARD_EF_SEARCH_TIERS), so its recall should rise with the value
    asked as one server's does.
Data: embedding-like unit vectors (clusters in a 64-dim latent space, 384 dims). Usage:
  .venv/bin/python bench/sharding/service.py [--count 100000] [--shards 4] [--queries 300]
      [--shard-ef-search 0,20,10] [--query-ef-search 0,100,400] [--pin-front 0]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack, Ports, cpu_list
from meshsearch_harness.bulk import column_batches
from meshsearch_harness.datasets import embedding_like_vectors
from meshsearch_harness.figures import cpu_description, percentile
from meshsearch_harness.neighbours import exact_top10, queries_near, recall
from meshsearch_harness.processes import cpu_between, cpu_seconds, pin, postgres_pids, server_cpu

CLIENTS = 8


def load(stub: search_pb2_grpc.VectorStoreServiceStub, data: np.ndarray, name: str, shards: int) -> tuple[float, float]:
    """(wall seconds of the whole BulkUpsert, of which the index build)."""
    stub.CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=name, dimension=data.shape[1], shards=shards))
    )
    started = time.perf_counter()
    response = stub.BulkUpsert(column_batches(data, name, metadata=lambda i: {"b10": i % 10}), timeout=7200)
    assert response.upserted_count == len(data), response
    return time.perf_counter() - started, response.index_build_seconds


def query(
    stub: search_pb2_grpc.VectorStoreServiceStub, name: str, vector: np.ndarray, ef_search: int = 0
) -> tuple[list[int], float]:
    started = time.perf_counter()
    hits = stub.Query(
        pb.QueryRequest(
            collection=name,
            k=10,
            vector=pb.Vector(data=vector.tobytes(), dimension=len(vector)),
            omit_text=True,
            ef_search=ef_search,
        ),
        timeout=30,
    ).points
    return [int(hit.point.id[1:]) for hit in hits], (time.perf_counter() - started) * 1000


def cpu_readings(stack: EmbeddedStack) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each part of the mesh, by process: the coordinator PostgreSQL, each
    shard server, the search service and this benchmark's clients."""
    readings = {"coordinator": server_cpu(stack.pgdata("postgres"))}
    for index in range(stack.shards):
        readings[f"shard {index}"] = server_cpu(stack.pgdata(f"shard-{index}"))
    search = stack.processes["search"].pid
    readings["search service"] = {search: cpu_seconds(search)}
    readings["clients"] = {os.getpid(): cpu_seconds(os.getpid())}
    return readings


def measure(
    stub, name: str, queries: np.ndarray, truth: list[set[int]], clients: int, stack: EmbeddedStack, ef_search: int = 0
):  # type: ignore[no-untyped-def]
    """(recall@10, p50 ms, p99 ms, queries/s, CPU ms per query by part of the mesh) with
    `clients` callers at once, each query asking for `ef_search` (0: the default)."""
    for vector in queries[:20]:
        query(stub, name, vector, ef_search)  # warm the pools and the shards' caches
    before = cpu_readings(stack)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(lambda vector: query(stub, name, vector, ef_search), queries))
    elapsed = time.perf_counter() - started
    after = cpu_readings(stack)
    latencies = [ms for _, ms in outcomes]
    cpu_ms = {part: cpu_between(before[part], after[part]) * 1000 / len(queries) for part in after}
    return (
        recall([found for found, _ in outcomes], truth),
        percentile(latencies, 50),
        percentile(latencies, 99),
        len(queries) / elapsed,
        cpu_ms,
    )


def pin_front(stack: EmbeddedStack, front: frozenset[int]) -> None:
    """The coordinator PostgreSQL and the search service on the `front` CPUs; the shard servers
    and this benchmark (its clients' threads) on the others. Backends forked later inherit
    their postmaster's CPUs, so the split holds for connections opened after it."""
    back = frozenset(os.sched_getaffinity(0)) - front
    assert front and back, f"--pin-front {sorted(front)} must leave CPUs for the shards and clients"
    pin([*postgres_pids(stack.pgdata("postgres")), stack.processes["search"].pid], front)
    for index in range(stack.shards):
        pin(postgres_pids(stack.pgdata(f"shard-{index}")), back)
    pin([os.getpid()], back)


def cpu_model(
    label: str, cpu_ms: dict[str, float], measured_qps: float, front_cpus: frozenset[int] | None = None
) -> None:
    """Where one query's CPU goes, the throughput that predicts for this machine's cores (checked
    against the measured), and what it predicts when each shard and the coordinator get cores
    of their own (the N-machine model: every query visits every shard). With the front pinned
    to `front_cpus`, the prediction is the bound of the busier of the two groups of CPUs."""
    shards = {part: ms for part, ms in cpu_ms.items() if part.startswith("shard") and ms > 0}  # this collection's
    front = cpu_ms["coordinator"] + cpu_ms["search service"]
    total = sum(cpu_ms.values())
    parts = ", ".join(f"{part} {ms:.2f}" for part, ms in cpu_ms.items())
    if front_cpus is None:
        predicted = (os.cpu_count() or 1) * 1000 / total
        where = f"{os.cpu_count()} cores"
    else:
        back_cpus = len(os.sched_getaffinity(0))
        front_bound = len(front_cpus) * 1000 / front
        back_bound = back_cpus * 1000 / (total - front)
        predicted = min(front_bound, back_bound)
        where = (
            f"the front's {len(front_cpus)} CPU(s) (bound {front_bound:.0f}, busy "
            f"{measured_qps / front_bound:.0%}) and the shards' and clients' {back_cpus} (bound "
            f"{back_bound:.0f}, busy {measured_qps / back_bound:.0%})"
        )
    print(
        f"  {label}: CPU ms per query: {parts}; total {total:.2f} -> predicted {predicted:.0f} queries/s on "
        f"{where}, measured {measured_qps:.0f} ({measured_qps / predicted:.2f} of it)"
    )
    if shards:
        busiest = max(shards.values())
        print(
            f"    with a core per shard and per front (coordinator + search service): shards bound it at "
            f"{1000 / busiest:.0f} queries/s per core each, the front at {1000 / front:.0f} per core"
        )


def asked_ef_search(
    stack: EmbeddedStack, queries: np.ndarray, truth: list[set[int]], sharded: str, values: list[int]
) -> None:
    """One client's queries asking for each ef_search in `values`, on one server and sharded."""
    shards = sharded.split()[0]
    print(
        f"\nqueries asking for an ef_search, one client\n| ef_search asked | one server: recall@10, p50 / p99 ms "
        f"| {sharded}: recall@10, p50 / p99 ms | p50 × one server | p99 × one server |\n|---|---:|---:|---:|---:|"
    )
    with stack.sync_channel("search") as channel:
        stub = search_pb2_grpc.VectorStoreServiceStub(channel)
        for ef_search in values:
            one = measure(stub, "bench_0", queries, truth, 1, stack, ef_search)
            many = measure(stub, f"bench_{shards}", queries, truth, 1, stack, ef_search)
            print(
                f"| {ef_search or 'none (default)'} | {one[0]:.3f}, {one[1]:.2f} / {one[2]:.2f} "
                f"| {many[0]:.3f}, {many[1]:.2f} / {many[2]:.2f} | {many[1] / one[1]:.2f} | {many[2] / one[2]:.2f} |",
                flush=True,
            )


def restart_with_shard_ef_search(stack: EmbeddedStack, ef_search: int) -> None:
    """The search service again, its shards' sessions at `ef_search` (0: the default's)."""
    stack.extra_env["MESHSEARCH_SEARCH_SHARD_EF_SEARCH"] = str(ef_search)
    stack.stop_service("search")
    stack.start_service("search")
    stack.wait_service("search")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument(
        "--shard-ef-search",
        default="0",
        help="comma-separated MESHSEARCH_SEARCH_SHARD_EF_SEARCH values to measure the sharded collection at "
        "(0: the service's default ef_search); one server is measured beside each",
    )
    parser.add_argument(
        "--query-ef-search",
        default="",
        help="comma-separated ef_search values for queries to ask (0: none), one client, both collections, "
        "with the shards' default sessions (the first --shard-ef-search round)",
    )
    parser.add_argument(
        "--pin-front",
        type=cpu_list,
        help="after the loads, run the coordinator and the search service on these CPUs (taskset's list "
        "form: 0 or 0-1) and the shard servers and clients on the others",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the stack's servers and data here, and reuse collections an earlier run loaded there "
        "(their load is then not measured again); default: a temporary directory",
    )
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    print(f"{args.count:,} vectors of 384 dims; {args.shards} shard servers and the coordinator on this machine")
    data = embedding_like_vectors(args.count, 384, clusters=200, seed=1)
    queries = queries_near(data, args.queries)
    truth = exact_top10(data, queries)
    sharded = f"{args.shards} shards"
    with contextlib.ExitStack() as cleanup:
        workdir = args.data_dir or Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="meshsearch-sharding-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        stack = EmbeddedStack(workdir, Ports.ephemeral(), shards=args.shards)
        with stack.running(services=("search",)):
            loads = {}
            with stack.sync_channel("search") as channel:
                stub = search_pb2_grpc.VectorStoreServiceStub(channel)
                present = {c.name for c in stub.ListCollections(pb.ListCollectionsRequest()).collections}
                for label, shards in (("one server", 0), (sharded, args.shards)):
                    if f"bench_{shards}" in present:
                        print(f"{label}: loaded by an earlier run in {workdir}", flush=True)
                        continue
                    loads[label] = load(stub, data, f"bench_{shards}", shards)
                    print(
                        f"{label}: BulkUpsert {loads[label][0]:.1f} s (index build {loads[label][1]:.1f} s)", flush=True
                    )
            if len(loads) == 2:
                (one_wall, one_build), (wall, build) = loads.values()
                print(
                    f"ratios: BulkUpsert wall {wall / one_wall:.2f}x, index build {build / one_build:.2f}x", flush=True
                )
            for round_index, ef_search in enumerate(int(value) for value in args.shard_ef_search.split(",")):
                if round_index or ef_search:
                    restart_with_shard_ef_search(stack, ef_search)
                if args.pin_front:
                    pin_front(stack, args.pin_front)
                with stack.sync_channel("search") as channel:
                    stub = search_pb2_grpc.VectorStoreServiceStub(channel)
                    one, one_many = (measure(stub, "bench_0", queries, truth, c, stack) for c in (1, CLIENTS))
                    many_shards = f"bench_{args.shards}"
                    single, many = (measure(stub, many_shards, queries, truth, c, stack) for c in (1, CLIENTS))
                print(
                    f"\nshards' ef_search {ef_search or 'default'}: one client: recall@10 {single[0]:.3f} vs "
                    f"{one[0]:.3f}, p50 {single[1]:.2f} vs {one[1]:.2f} ms ({single[1] / one[1]:.2f}x), p99 "
                    f"{single[2]:.2f} vs {one[2]:.2f} ms ({single[2] / one[2]:.2f}x); {CLIENTS} clients: "
                    f"{many[3]:.0f} vs {one_many[3]:.0f} queries/s ({many[3] / one_many[3]:.2f}x), p99 "
                    f"{many[2]:.2f} vs {one_many[2]:.2f} ms ({many[2] / one_many[2]:.2f}x)",
                    flush=True,
                )
                cpu_model(f"one server, {CLIENTS} clients", one_many[4], one_many[3], args.pin_front)
                cpu_model(f"{sharded}, {CLIENTS} clients", many[4], many[3], args.pin_front)
                if round_index == 0 and args.query_ef_search:
                    asked_ef_search(stack, queries, truth, sharded, [int(v) for v in args.query_ef_search.split(",")])


if __name__ == "__main__":
    main()
