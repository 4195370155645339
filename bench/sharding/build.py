"""How far one node goes: what the HNSW build's settings cost and buy (issue 29, point 1).

One embedded PostgreSQL (pgvector) holds `--count` embedding-like vectors (bench/search's data),
stored once as `vector` (float32) and once as `halfvec` (float16). Then, one after another on
the same tables, an HNSW index is built for each configuration of the sweep (m, ef_construction,
maintenance_work_mem, parallel maintenance workers, storage) and measured:
  - build wall time (ANALYZE excluded), and whether pgvector said the graph outgrew
    maintenance_work_mem (its notice, with the tuple count where it happened);
  - peak memory of the server during the build: the sum of every PostgreSQL process's
    proportional set size (PSS: shared pages split among the processes that map them, so the
    leader's and the parallel workers' shared graph is counted once), sampled every 50 ms,
    minus the same sum before the build;
  - table and index size;
  - recall@10 against exact search (numpy) and query p50 / p99 at hnsw.ef_search 40 (the
    service's default), one client, direct SQL.
Every row comes from the same run, data and queries, so the ratios between rows hold on a noisy
machine. Usage:
  .venv/bin/python bench/sharding/build.py [--count 100000] [--queries 200]
      [--sweep "m=16,efc=64,mem=1GB,workers=2,storage=vector;..."]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from probe import STORAGES, Storage, copy_rows, create_points_table, execute, servers

from meshsearch_harness.datasets import embedding_like_vectors
from meshsearch_harness.figures import cpu_description, percentile
from meshsearch_harness.neighbours import exact_top10, queries_near, recall
from meshsearch_harness.processes import postgres_pids, pss_bytes

DEFAULT_SWEEP = ";".join(
    [
        "m=16,efc=64,mem=1GB,workers=2,storage=vector",  # the service's defaults
        "m=16,efc=64,mem=1GB,workers=0,storage=vector",  # no parallel workers
        "m=16,efc=64,mem=64MB,workers=2,storage=vector",  # the graph outgrows the memory
        "m=16,efc=32,mem=1GB,workers=2,storage=vector",
        "m=16,efc=128,mem=1GB,workers=2,storage=vector",
        "m=8,efc=64,mem=1GB,workers=2,storage=vector",
        "m=32,efc=64,mem=1GB,workers=2,storage=vector",
        "m=16,efc=64,mem=1GB,workers=2,storage=halfvec",
    ]
)
QUERY_EF_SEARCH = 40
_OUTGREW = re.compile(r"after ([\d,]+) tuples")


@dataclass(frozen=True)
class Build:
    """One configuration of the sweep."""

    m: int
    ef_construction: int
    memory: str
    workers: int
    storage: Storage

    @classmethod
    def parse(cls, text: str) -> Build:
        fields = dict(part.split("=", 1) for part in text.split(","))
        return cls(
            int(fields["m"]), int(fields["efc"]), fields["mem"], int(fields["workers"]), STORAGES[fields["storage"]]
        )

    @property
    def table(self) -> str:
        return f"points_{self.storage.type}"

    def describe(self) -> str:
        return f"m {self.m}, ef_c {self.ef_construction}, {self.memory}, {self.workers} workers, {self.storage.type}"


class PeakMemory:
    """Samples the server's PSS every 50 ms in a thread while a block runs; keeps the peak."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._stop = threading.Event()
        self.baseline = pss_bytes(postgres_pids(data_dir))
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, pss_bytes(postgres_pids(self._data_dir)))

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def build(url: str, data_dir: Path, config: Build) -> tuple[float, int, str]:
    """(seconds, peak memory above the idle server in bytes, pgvector's notice if the graph
    outgrew maintenance_work_mem) for one CREATE INDEX."""
    notices: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda notice: notices.append(notice.message_primary or ""))
        conn.execute(f"DROP INDEX IF EXISTS {config.table}_hnsw")
        conn.execute(f"SET maintenance_work_mem = '{config.memory}'")
        conn.execute(f"SET max_parallel_maintenance_workers = {config.workers}")
        with PeakMemory(data_dir) as memory:
            started = time.perf_counter()
            conn.execute(
                f"CREATE INDEX {config.table}_hnsw ON {config.table} USING hnsw (embedding {config.storage.operators}) "
                f"WITH (m = {config.m}, ef_construction = {config.ef_construction})"
            )
            seconds = time.perf_counter() - started
    outgrew = next((_OUTGREW.search(notice) for notice in notices if "maintenance_work_mem" in notice), None)
    return seconds, memory.peak - memory.baseline, f"after {outgrew.group(1)} rows" if outgrew else ""


def sizes(url: str, table: str) -> tuple[int, int]:
    """(table with TOAST, HNSW index) in bytes."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_table_size(%s::regclass), pg_relation_size(%s::regclass)", (table, f"{table}_hnsw")
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def queried(url: str, config: Build, queries: np.ndarray) -> tuple[list[list[int]], list[float]]:
    """Each query's 10 row numbers and its latency (ms) through the index just built."""
    found, latencies = [], []
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(f"SET hnsw.ef_search = {QUERY_EF_SEARCH}")
        statement = f"SELECT id FROM {config.table} ORDER BY embedding <=> %s::{config.storage.type} LIMIT 10"  # noqa: S608
        for query in queries:
            started = time.perf_counter()
            rows = conn.execute(statement, (config.storage.value(query),)).fetchall()
            latencies.append((time.perf_counter() - started) * 1000)
            found.append([int(row[0][1:]) for row in rows])
    return found, latencies


def megabytes(count: int) -> str:
    return f"{count / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sweep", default=DEFAULT_SWEEP, help="configurations separated by ';'")
    args = parser.parse_args()
    sweep = [Build.parse(text) for text in args.sweep.split(";")]

    print(cpu_description())
    data = embedding_like_vectors(args.count, 384, 200, seed=1)
    queries = queries_near(data, args.queries)
    truth = exact_top10(data, queries)
    with (
        tempfile.TemporaryDirectory(prefix="meshsearch-build-") as workdir,
        servers(Path(workdir), ["node"]) as running,
    ):
        node = running["node"]
        data_dir = Path(workdir) / "node"
        for storage in sorted({config.storage.type for config in sweep}):
            create_points_table(node.url, f"points_{storage}", 384, STORAGES[storage])
            seconds = copy_rows(node.url, f"points_{storage}", data, STORAGES[storage])
            execute(node.url, f"VACUUM ANALYZE points_{storage}")
            print(f"loaded {args.count:,} rows as {storage} in {seconds:.1f} s")
        print(
            f"\n{args.count:,} vectors x 384; queries: {args.queries}, ef_search {QUERY_EF_SEARCH}, one client\n"
            "| configuration | build s | × first | outgrew memory | peak memory above idle | table | index "
            "| recall@10 | p50 / p99 ms |\n|---|---:|---:|---|---:|---:|---:|---:|---:|"
        )
        first = None
        for config in sweep:
            seconds, peak, outgrew = build(node.url, data_dir, config)
            first = first or seconds
            table, index = sizes(node.url, config.table)
            found, latencies = queried(node.url, config, queries)
            print(
                f"| {config.describe()} | {seconds:.1f} | {seconds / first:.2f} | {outgrew or 'no'} "
                f"| {megabytes(peak)} "
                f"| {megabytes(table)} | {megabytes(index)} | {recall(found, truth):.3f} "
                f"| {percentile(latencies, 50):.2f} / {percentile(latencies, 99):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
