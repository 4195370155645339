"""What a PostgreSQL server (or any process) costs, read from Linux's /proc: CPU time and
memory, for benchmarks that say where the work of a request goes."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def postgres_pids(pgdata: Path) -> list[int]:
    """The postmaster of the server in `pgdata` (first) and every process it started: backends,
    parallel workers, background processes."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
    return [postmaster, *map(int, children)]


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (which may hold spaces): field 3 of proc(5) first."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int, *, with_exited_children: bool = False) -> float:
    """User + system CPU of `pid` (every thread), and of its children that have exited and been
    waited for, if asked: a postmaster's ended backends. 0 for a process that is gone."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (proc(5) fields 14, 15)
    if with_exited_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLOCK_TICKS


def server_cpu(pgdata: Path) -> dict[int, float]:
    """CPU seconds so far of each process of a PostgreSQL server, by pid (the postmaster's with
    its ended backends'). Two readings subtract (`cpu_between`) to what a workload cost."""
    pids = postgres_pids(pgdata)
    return {pid: cpu_seconds(pid, with_exited_children=index == 0) for index, pid in enumerate(pids)}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings of `server_cpu` (processes born between count whole)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def pin(pids: list[int], cpus: frozenset[int]) -> None:
    """Move every thread of `pids` onto `cpus`, now; processes and threads they start later
    inherit it. For measuring, on one machine, a deployment whose parts have cores of their own."""
    for pid in pids:
        try:
            threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            continue  # ended since it was listed
        for tid in threads:
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, cpus)


def pss_bytes(pids: list[int]) -> int:
    """Memory of a group of processes: the sum of their proportional set sizes (PSS splits each
    shared page among the processes mapping it, so shared memory is counted once)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # a process that ended between the listing and the read
    return total
