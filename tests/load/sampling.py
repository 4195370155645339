"""What a soak watches over time: each process's memory, open files and TCP connections; the
database's connections and the rows of the ingest tables; each Redis's memory and keys; and the
latency percentiles of every service (the api's as its callers see it, the upstreams' from their
own Prometheus histograms). Then the verdict on growth, and the plot in docs/.
"""

from __future__ import annotations

import json
import math
import statistics
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
import redis
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import make_conninfo

from meshsearch_cli.stack import REDIS_SERVERS, EmbeddedStack
from meshsearch_harness.figures import percentile
from tests.load.calls import CallLog, now

SERVICES = ("api", "worker", "embedder", "search")
LATENCY = "meshsearch_rpc_duration_seconds"
SUM = -1.0  # where _histogram keeps the total seconds, beside the bucket bounds
# Growth is judged on the median of each quarter of the run: the last quarter against the third
# (both in the last half, past warm-up), so that a single spike decides nothing. Below these
# floors a change is noise, whatever its ratio (a socket more, a millisecond more).
GROWTH_LIMIT = 0.10
FLOORS = {
    "rss_mb": 8.0,
    "open_files": 4,
    "connections": 4,
    "latency_ms": 10.0,
    "rows": 200,
    "keys": 200,
    "memory_mb": 4,
}


@dataclass
class Series:
    """One measured quantity over time."""

    name: str
    kind: str  # a key of FLOORS: how much change is noise
    # False: plotted and reported, not judged. A percentile interpolated inside a histogram's
    # coarse bucket (0.1 to 0.25 s) jumps with the mix of calls; the same service's mean latency,
    # exact from the histogram's sum and count, is judged instead.
    judged: bool = True
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, at: float, value: float) -> None:
        self.times.append(at)
        self.values.append(value)

    def growth(self) -> tuple[float, float, float]:
        """(level of the third quarter, of the last quarter, growth ratio beyond noise). The level
        is the median, except for a process's memory: its floor (10th percentile). A call that
        allocates a lot for a moment (an argon2 key hash takes tens of MiB) makes RSS swing by
        hundreds of MiB, and the median with it; what leaks never comes back, so it lifts the floor."""
        n = len(self.values)
        third = self.values[n // 2 : 3 * n // 4] or self.values
        last = self.values[3 * n // 4 :] or self.values
        before, after = _level(self.kind, third), _level(self.kind, last)
        if after - before <= FLOORS[self.kind]:
            return before, after, 0.0
        return before, after, (after - before) / max(before, 1e-9)


def _level(kind: str, values: list[float]) -> float:
    if kind == "rss_mb":
        return statistics.quantiles(values, n=10)[0] if len(values) > 1 else values[0]
    return statistics.median(values)


def _histogram(port: int) -> dict[float, float]:
    """Upper bound -> cumulative count of every RPC's server-side latency (methods summed), and
    under SUM the seconds they took in all."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    buckets: dict[float, float] = defaultdict(float)
    for family in text_string_to_metric_families(body):
        if family.name != LATENCY:
            continue
        for found in family.samples:
            if "Check" in found.labels.get("method", ""):
                continue  # health checks
            if found.name.endswith("_bucket"):
                buckets[float(found.labels["le"])] += found.value
            elif found.name.endswith("_sum"):
                buckets[SUM] += found.value
    return dict(buckets)


def _mean(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The mean latency (seconds) of the calls between two scrapes; None without calls."""
    calls = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    return (after.get(SUM, 0.0) - before.get(SUM, 0.0)) / calls if calls > 0 else None


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The q-quantile (seconds) of the calls between two histogram scrapes, interpolated in its
    bucket as Prometheus's histogram_quantile does; None without calls."""
    bounds = sorted(bound for bound in after if bound != SUM)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


class Sampler:
    """Takes one sample of everything at a time; `series` holds them by name."""

    def __init__(self, stack: EmbeddedStack, log: CallLog) -> None:
        self.stack = stack
        self.log = log
        self.series: dict[str, Series] = {}
        self._histograms: dict[str, dict[float, float]] = {}
        self.started = now()
        self._last_at = self.started
        self._redis = {
            name: redis.Redis.from_url(getattr(stack, f"{REDIS_SERVERS[name][0]}_url")) for name in REDIS_SERVERS
        }

    def _put(self, name: str, kind: str, at: float, value: float | None, judged: bool = True) -> None:
        if value is not None:
            self.series.setdefault(name, Series(name, kind, judged=judged)).add(at, value)

    def sample(self) -> None:
        moment = now()
        at = moment - self.started  # seconds into the run
        for name in (*SERVICES, *REDIS_SERVERS):
            process = psutil.Process(self.stack.processes[name].pid)
            self._put(f"{name} RSS (MiB)", "rss_mb", at, process.memory_info().rss / 2**20)
            self._put(f"{name} open files", "open_files", at, process.num_fds())
            self._put(f"{name} TCP connections", "connections", at, len(process.net_connections("tcp")))
        with psycopg.connect(self.stack.database_url, autocommit=True) as conn:
            backends = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            self._put("postgres connections", "connections", at, backends.fetchone()[0])  # type: ignore[index]
        assert self.stack.databases is not None
        with psycopg.connect(make_conninfo(self.stack.database_url, dbname="meshsearch_jobs"), autocommit=True) as conn:
            tables = conn.execute(
                "SELECT relname FROM pg_stat_user_tables "
                "WHERE relname LIKE 'meshsearch_%' OR relname LIKE 'procrastinate_%'"
            ).fetchall()
            for (table,) in tables:  # exact counts: n_live_tup lags deletes until autovacuum
                count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
                self._put(f"rows of {table}", "rows", at, count[0] if count else 0)
        for name, client in self._redis.items():
            info = client.info("memory")
            self._put(f"{name} memory (MiB)", "memory_mb", at, info["used_memory"] / 2**20)
            self._put(f"{name} keys", "keys", at, client.dbsize())
        calls = [record.seconds for record in self.log.between(self._last_at, moment)]
        if calls:
            self._put("api p50 (ms)", "latency_ms", at, percentile(calls, 50) * 1000)
            self._put("api p99 (ms)", "latency_ms", at, percentile(calls, 99) * 1000)
        for service in ("embedder", "search"):
            histogram = _histogram(getattr(self.stack.ports, f"{service}_metrics"))
            if service in self._histograms:
                for q in (50, 99):
                    value = _quantile(self._histograms[service], histogram, q / 100)
                    value_ms = None if value is None else value * 1000
                    self._put(f"{service} p{q} (ms)", "latency_ms", at, value_ms, judged=False)
                mean = _mean(self._histograms[service], histogram)
                self._put(f"{service} mean (ms)", "latency_ms", at, None if mean is None else mean * 1000)
            self._histograms[service] = histogram
        self._last_at = moment

    def growth(self) -> list[tuple[str, float, float, float]]:
        """(series, third-quarter median, last-quarter median, growth) of every judged series."""
        return [(name, *series.growth()) for name, series in sorted(self.series.items()) if series.judged]

    def save(self, path: Path) -> None:
        """Every series as JSON (seconds into the run, value), beside the plot."""
        path.write_text(
            json.dumps({name: list(zip(x.times, x.values, strict=True)) for name, x in self.series.items()})
        )

    def plot(self, path: Path, title: str) -> None:
        """Every series on a grid of panels by kind, to `path` (PNG)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        kinds = sorted({series.kind for series in self.series.values()})
        figure, axes = plt.subplots(len(kinds), 1, figsize=(11, 2.6 * len(kinds)), sharex=True)
        for axis, kind in zip(axes, kinds, strict=True):
            for series in self.series.values():
                if series.kind == kind:
                    axis.plot([t / 60 for t in series.times], series.values, label=series.name, linewidth=1)
            axis.set_ylabel(kind)
            axis.legend(fontsize=6, loc="upper left", ncol=4)
            axis.grid(alpha=0.3)
        axes[-1].set_xlabel("minutes")
        figure.suptitle(title, fontsize=9)
        figure.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=90)
        plt.close(figure)
