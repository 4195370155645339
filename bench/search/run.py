"""Search service benchmark: pgvector through the service vs the same work done directly.

In one run, on an embedded PostgreSQL 18 + pgvector 0.8 and a search service process:
  - load: BulkUpsert through the service vs a raw psycopg binary COPY of the same rows into a
    table of the same shape (same columns, same non-HNSW indexes);
  - time to make the loaded rows query-ready: ANALYZE + HNSW build (the service does it after
    its bulk load; the raw table is analyzed and indexed by hand);
  - unfiltered queries, one client: service QPS and p50/p99 vs the same SQL sent directly with
    psycopg to the same table, at several ef_search values (equal ef_search = equal recall,
    since both read the same index), with recall@10 against exact search (numpy); interleaved
    with them, the same query through a minimal Python gRPC server (reference_server.py: the
    same SQL and nothing else), which measures what the gRPC hop alone costs on this machine;
  - filtered queries at 10% and 1% selectivity: recall@10 and rows returned by the service
    (which picks exact search or an iterative HNSW scan), next to direct SQL with a plain
    HNSW scan (no iterative scan) for contrast.
Data: embedding-like unit vectors (clusters in a 64-dim latent space, 384 dims). Usage:
  .venv/bin/python bench/search/run.py [--count 100000] [--queries 200] [--load-rounds 3]
HNSW builds use MESHSEARCH_SEARCH_INDEX_BUILD_MEMORY (default 1GB) on both sides; for 1M
vectors give it room (e.g. 6GB) and use --load-rounds 2 --skip-prebuilt-load (fewer builds).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psycopg
from google.protobuf import struct_pb2
from pgvector.psycopg import register_vector
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import Jsonb

from meshsearch.search.v1 import search_pb2 as pb  # noqa: E402
from meshsearch.search.v1 import search_pb2_grpc  # noqa: E402
from meshsearch_cli.stack import EmbeddedStack, Ports, free_port  # noqa: E402
from meshsearch_harness.bulk import column_batches  # noqa: E402
from meshsearch_harness.datasets import embedding_like_vectors  # noqa: E402
from meshsearch_harness.figures import cpu_description, percentile  # noqa: E402
from meshsearch_harness.neighbours import exact_top10, queries_near, recall  # noqa: E402

INDEX_BUILD_MEMORY = os.environ.get("MESHSEARCH_SEARCH_INDEX_BUILD_MEMORY", "1GB")  # the service reads it too


def metadata(i: int) -> dict[str, int]:
    return {"b10": i % 10, "b100": i % 100}


def quiesce(url: str) -> None:
    """Start each load from the same quiet database: vacuum what earlier loads left (otherwise
    autovacuum works on the earlier table, index included, while the next load runs) and flush
    dirty pages (otherwise the next load pays for the WAL an earlier one wrote)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")


def raw_copy(url: str, data: np.ndarray) -> float:
    """Rows/s of a hand-written binary COPY into a table shaped like a collection's."""
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("DROP TABLE IF EXISTS raw_points")
        conn.execute(
            f"""CREATE TABLE raw_points (id text PRIMARY KEY, embedding vector({data.shape[1]}) NOT NULL,
                text text NOT NULL DEFAULT '', metadata jsonb NOT NULL DEFAULT '{{}}',
                tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
                updated_at timestamptz NOT NULL DEFAULT now())"""
        )
        conn.execute("CREATE INDEX ON raw_points USING gin (metadata jsonb_path_ops)")
        conn.execute("CREATE INDEX ON raw_points USING gin (tsv)")
        quiesce(url)
        started = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy(
                "COPY raw_points (id, embedding, text, metadata) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy,
        ):
            copy.set_types(["text", "vector", "text", "jsonb"])
            for i, row in enumerate(data):
                copy.write_row((f"p{i}", row, "", Jsonb(metadata(i))))
        return len(data) / (time.perf_counter() - started)


def raw_index_build(url: str) -> float:
    """Seconds to make the raw table query-ready: statistics, then the HNSW index."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'; SET max_parallel_maintenance_workers = 2")
        started = time.perf_counter()
        conn.execute("ANALYZE raw_points")  # as the service does after its load
        conn.execute(
            "CREATE INDEX ON raw_points USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        )
        return time.perf_counter() - started


def service_load(
    stub: search_pb2_grpc.VectorStoreServiceStub, data: np.ndarray, collection: str, prebuilt: bool, url: str
):  # type: ignore[no-untyped-def]
    """(rows/s of the load itself, index build seconds). With `prebuilt`, the client's cost of
    building the messages is paid before the clock starts; otherwise the client builds them
    as it streams, and that cost is part of the load."""
    stub.CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=collection, dimension=data.shape[1]))
    )
    requests = column_batches(data, collection, metadata=metadata)
    if prebuilt:
        requests = iter(list(requests))
    quiesce(url)
    started = time.perf_counter()
    response = stub.BulkUpsert(requests, timeout=3600)
    total = time.perf_counter() - started
    assert response.upserted_count == len(data), response
    return len(data) / (total - response.index_build_seconds), response.index_build_seconds


@contextlib.contextmanager
def reference_server(url: str, table: str, ef_search: int) -> Iterator[search_pb2_grpc.VectorStoreServiceStub]:
    """A stub for the minimal Query server (reference_server.py) running on `table`."""
    port = free_port()
    script = Path(__file__).with_name("reference_server.py")
    process = subprocess.Popen(
        [sys.executable, str(script), url, table, str(port), str(ef_search)], stdout=subprocess.PIPE, text=True
    )
    try:
        if process.stdout is None or process.stdout.readline().strip() != "ready":
            raise RuntimeError("reference server did not start")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield search_pb2_grpc.VectorStoreServiceStub(channel)
    finally:
        process.terminate()
        process.wait()


def paired_queries(
    url: str,
    table: str,
    stub,
    reference,
    queries: np.ndarray,
    ef_search: int,
    query_filter: pb.Filter | None = None,
    where: str = "",
):  # type: ignore[no-untyped-def]
    """Each query sent directly with psycopg and through the service, alternately, so that
    background noise on this shared machine hits both sides alike; with a `reference` stub, the
    query also goes through the minimal server. Returns (direct found, direct latencies,
    service found, service latencies, reference latencies)."""
    statement = f"SELECT id FROM {table} {where} ORDER BY embedding <=> %s LIMIT 10"

    def request(q: np.ndarray) -> pb.QueryRequest:
        message = pb.QueryRequest(
            collection="bench", vector=pb.Vector(data=q.tobytes(), dimension=q.shape[0]), k=10, ef_search=ef_search
        )
        if query_filter is not None:
            message.filter.CopyFrom(query_filter)
        return message

    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"SET hnsw.ef_search = {ef_search}")
        for query in queries[:5]:  # warm both paths (and let psycopg prepare the statement)
            conn.execute(statement, (query,)).fetchall()
            stub.Query(request(query))
            if reference is not None:
                reference.Query(request(query))
        sides = ["direct", "service"] + (["reference"] if reference is not None else [])
        direct_found, direct_lat, service_found, service_lat, reference_lat = [], [], [], [], []
        for index, query in enumerate(queries):
            for side in sides[index % len(sides) :] + sides[: index % len(sides)]:  # rotate the order
                started = time.perf_counter()
                if side == "reference":
                    reference.Query(request(query))
                    reference_lat.append(time.perf_counter() - started)
                elif side == "direct":
                    rows = conn.execute(statement, (query,)).fetchall()
                    direct_lat.append(time.perf_counter() - started)
                    direct_found.append([int(r[0][1:]) for r in rows])
                else:
                    response = stub.Query(request(query))
                    service_lat.append(time.perf_counter() - started)
                    service_found.append([int(p.point.id[1:]) for p in response.points])
    return direct_found, direct_lat, service_found, service_lat, reference_lat


def paired_batches(url: str, table: str, stub, queries: np.ndarray, ef_search: int, size: int = 10):  # type: ignore[no-untyped-def]
    """QPS of QueryBatch calls of `size` queries vs the same queries sent one by one directly,
    batch by batch alternately. Returns (direct QPS, service QPS, service recall found)."""
    statement = f"SELECT id FROM {table} ORDER BY embedding <=> %s LIMIT 10"
    direct_s = service_s = 0.0
    found: list[list[int]] = []
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"SET hnsw.ef_search = {ef_search}")
        for start in range(0, len(queries), size):
            chunk = queries[start : start + size]
            started = time.perf_counter()
            for query in chunk:
                conn.execute(statement, (query,)).fetchall()
            direct_s += time.perf_counter() - started
            request = pb.QueryBatchRequest(
                queries=[
                    pb.QueryRequest(
                        collection="bench",
                        vector=pb.Vector(data=q.tobytes(), dimension=q.shape[0]),
                        k=10,
                        ef_search=ef_search,
                    )
                    for q in chunk
                ]
            )
            started = time.perf_counter()
            response = stub.QueryBatch(request)
            service_s += time.perf_counter() - started
            found += [[int(p.point.id[1:]) for p in result.points] for result in response.results]
    return len(queries) / direct_s, len(queries) / service_s, found


def summary(latencies: list[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return f"{len(ms) / sum(latencies):7.1f} QPS  p50 {percentile(ms, 50):6.2f} ms  p99 {percentile(ms, 99):6.2f} ms"


def rows_range(found: list[list[int]]) -> str:
    return f"{min(map(len, found))}-{max(map(len, found))}"


def eq_filter(key: str, value: int) -> pb.Filter:
    return pb.Filter(must=[pb.Condition(field=pb.FieldCondition(key=key, eq=struct_pb2.Value(number_value=value)))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=200)
    parser.add_argument("--skip-queries", action="store_true", help="measure loads and index builds only")
    parser.add_argument(
        "--skip-prebuilt-load", action="store_true", help="skip the second service load (saves an HNSW build at 1M)"
    )
    parser.add_argument("--load-rounds", type=int, default=3, help="load measurements (each builds HNSW indexes)")
    args = parser.parse_args()
    data = embedding_like_vectors(args.count, args.dimension, args.clusters, seed=1)
    queries = queries_near(data, args.queries)
    print(f"CPU: {cpu_description()}")
    print(f"{args.count} x {args.dimension} embedding-like unit vectors, {args.queries} queries, one client")

    with tempfile.TemporaryDirectory() as workdir:
        stack = EmbeddedStack(Path(workdir), Ports.ephemeral())
        with stack.running(services=("search",)):
            # The raw table lives beside the service's, in its database (pgvector installed there),
            # written by the server's administrator.
            search_database = conninfo_to_dict(stack.databases.search_url)["dbname"] if stack.databases else None
            url = make_conninfo(stack.database_url, dbname=search_database) if search_database else stack.database_url
            options = [("grpc.max_send_message_length", 64 << 20)]
            with stack.sync_channel("search", options=options) as channel:
                stub = search_pb2_grpc.VectorStoreServiceStub(channel)
                # Loads of 100k rows take ~2 s, so one load says little on a shared machine: run
                # several rounds (raw, then the service) and report medians of the per-round ratios.
                kinds = ["client builds messages as it streams"]
                if not args.skip_prebuilt_load:
                    kinds.append("messages built before")
                raw_rates: list[float] = []
                rates: dict[str, list[float]] = {kind: [] for kind in kinds}
                builds: list[float] = []
                for round_index in range(args.load_rounds):
                    raw_rates.append(raw_copy(url, data))
                    for kind in kinds:
                        name = "bench" if kind == kinds[0] else "bench_prebuilt"
                        rate, build = service_load(stub, data, name, prebuilt=kind != kinds[0], url=url)
                        rates[kind].append(rate)
                        builds.append(build)
                        if name != "bench" or round_index < args.load_rounds - 1:
                            stub.DeleteCollection(pb.DeleteCollectionRequest(name=name))  # keep one for queries
                raw_build = raw_index_build(url)
                print(f"\n{args.load_rounds} load rounds; rows/s and ratio are medians, the range is over rounds")
                print("| load | rows/s | × raw COPY | range |\n|---|---:|---:|---|")
                print(f"| raw psycopg binary COPY (same table shape) | {np.median(raw_rates):.0f} | 1.00 | |")
                for kind in kinds:
                    ratios = [rate / raw for rate, raw in zip(rates[kind], raw_rates, strict=True)]
                    print(
                        f"| service BulkUpsert, {kind} | {np.median(rates[kind]):.0f} | {np.median(ratios):.2f} "
                        f"| {min(ratios):.2f}-{max(ratios):.2f} |"
                    )
                print(
                    f"\nANALYZE + HNSW build (m=16, ef_construction=64, maintenance_work_mem {INDEX_BUILD_MEMORY}): "
                    f"service {np.median(builds):.1f} s (median of {len(builds)}), raw {raw_build:.1f} s"
                )
                if args.skip_queries:
                    return
                # Measure queries in steady state: vacuumed and analyzed.
                with psycopg.connect(url, autocommit=True) as conn:
                    row = conn.execute("SELECT id FROM meshsearch_collections WHERE name = 'bench'").fetchone()
                    table = f"meshsearch_points_{row[0]}"
                    conn.execute("DROP TABLE raw_points")
                    conn.execute(f"VACUUM ANALYZE {table}")
                    # Steady state means a warm cache: read the table and its indexes into the OS
                    # page cache (a 1M collection is ~28x PostgreSQL's default 128 MB of shared_buffers; the stack
                    # gives more: bench/search/buffers.py).
                    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
                    conn.execute(
                        "SELECT pg_prewarm(oid, 'read') FROM pg_class WHERE oid = %s::regclass "
                        "OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %s::regclass)",
                        (table, table),
                    )
                truth = exact_top10(data, queries)
                print("\nunfiltered, k=10, one client; direct SQL, the service and the minimal reference server")
                print("(the same SQL behind grpc.aio, nothing else) interleaved query by query:")
                print(
                    "| ef_search | recall@10 service (direct) | service | direct SQL | service × direct "
                    "| reference server × direct | service × reference |"
                )
                print("|---:|---:|---|---|---:|---:|---:|")
                for ef in (40, 80, 160, 320):
                    with reference_server(url, table, ef) as reference:
                        direct_found, direct_lat, service_found, service_lat, reference_lat = paired_queries(
                            url, table, stub, reference, queries, ef
                        )
                    ratio = sum(direct_lat) / sum(service_lat)
                    recalls = f"{recall(service_found, truth):.3f} ({recall(direct_found, truth):.3f})"
                    print(
                        f"| {ef} | {recalls} | {summary(service_lat)} | {summary(direct_lat)} | {ratio:.2f} "
                        f"| {sum(direct_lat) / sum(reference_lat):.2f} | {sum(reference_lat) / sum(service_lat):.2f} |"
                    )
                print("\nQueryBatch of 10 queries per call (the service runs them concurrently on its read pool):")
                print("| ef_search | recall@10 | service QPS | direct QPS (one by one) | QPS ratio |")
                print("|---:|---:|---:|---:|---:|")
                for ef in (40, 80):
                    direct_qps, service_qps, found = paired_batches(url, table, stub, queries, ef)
                    ratio = service_qps / direct_qps
                    print(f"| {ef} | {recall(found, truth):.3f} | {service_qps:.1f} | {direct_qps:.1f} | {ratio:.2f} |")
                print("\nfiltered, k=10, ef_search=40 (direct: a plain HNSW scan with the filter in WHERE):")
                print("| selectivity | service recall@10 | rows | service | direct recall | rows | direct |")
                print("|---|---:|---:|---|---:|---:|---|")
                ids = np.arange(args.count)
                for label, key, value, mask in (("10%", "b10", 3, ids % 10 == 3), ("1%", "b100", 42, ids % 100 == 42)):
                    filtered_truth = exact_top10(data, queries, mask)
                    where = f"WHERE metadata @> '{{\"{key}\": {value}}}'"
                    plain_found, plain_lat, service_found, service_lat, _ = paired_queries(
                        url, table, stub, None, queries, 40, eq_filter(key, value), where
                    )
                    service_part = f"{recall(service_found, filtered_truth):.3f} | {rows_range(service_found)}"
                    plain_part = f"{recall(plain_found, filtered_truth):.3f} | {rows_range(plain_found)}"
                    print(
                        f"| {label} | {service_part} | {summary(service_lat)} | {plain_part} | {summary(plain_lat)} |"
                    )


if __name__ == "__main__":
    main()
