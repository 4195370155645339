"""Every fault, under mixed load: searches of every mode, IndexDocuments, ingest jobs and key
churn from many clients (tests/load/mixed.py), while each process is killed, frozen and
restarted, Redis is flushed, each hop's link vanishes, resets, goes silent or slows,
PostgreSQL's disk fills (the full form) and its connections are exhausted, and at last the
primary PostgreSQL dies and its synchronous standby is promoted (tests/faults/mesh.py). For
each fault: the calls held past their deadline (must be none), the status codes before, during
and after it, and the time until calls succeed again; at the end, every acknowledged document
is stored once with its content, and every ingest job completed.

`make test` runs a short form (a sample of the faults, 16 clients); `make chaos` runs them all
with 64 clients and prints the table docs/reliability.md publishes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import pytest

from meshsearch_harness.figures import cpu_description
from meshsearch_harness.secured import bearer
from tests.e2e.ingest_helpers import stored_hashes
from tests.faults.mesh import Mesh, MeshFault, catalogue, start_mesh, stop_mesh
from tests.load.calls import CallLog, now
from tests.load.mixed import LoadShape, MixedLoad
from tests.load.secured_stack import TENANT, auth_env, new_bootstrap_key, tenant_key

FULL = os.environ.get("MESHSEARCH_CHAOS") == "full"
CLIENTS = 64 if FULL else 16
HOLD_S = 10.0 if FULL else 5.0
BASELINE_S = 4.0
RECOVERY_LIMIT_S = 90.0
SHORT = {
    "kill -9 api",
    "SIGSTOP embedder 5 s",
    "kill -9 redis",
    "SIGSTOP redis-state 5 s",
    "kill -9 postgres",
    "FLUSHALL both Redis",
    "vanish api→search",
    "reset worker→embedder",
    "PostgreSQL connections exhausted 5 s",
    "failover to the standby",
}
REPORT = os.environ.get("MESHSEARCH_CHAOS_REPORT", "")
# Only the faults whose names contain one of these comma-separated words (to retry one fault).
ONLY = [word for word in os.environ.get("MESHSEARCH_CHAOS_ONLY", "").split(",") if word]


@dataclass
class Outcome:
    fault: str
    before: dict[str, int]
    during: dict[str, int]
    after: dict[str, int]
    late: int
    recovered_s: float | None


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, str]]:
    bootstrap = new_bootstrap_key()
    running = start_mesh(Path(tmp_path_factory.mktemp("mesh-chaos")), auth_env(bootstrap), small_disk=FULL)
    try:
        yield running, bootstrap
    finally:
        stop_mesh(running)


async def _under(load: MixedLoad, mesh: Mesh, fault: MeshFault) -> Outcome:
    """Apply `fault` after a baseline, hold it, lift it, and wait for calls to succeed again."""
    await asyncio.sleep(BASELINE_S)
    applied = now()
    await asyncio.to_thread(fault.apply, mesh)
    await asyncio.sleep(fault.hold_s)
    await asyncio.to_thread(fault.lift, mesh)
    lifted = now()
    recovered = None
    while recovered is None and now() - lifted < RECOVERY_LIMIT_S:
        await asyncio.sleep(0.5)
        recovered = load.log.recovered_after(lifted)
    await asyncio.sleep(1.0)  # calls in flight end (or reach their deadline) before counting
    log = load.log
    return Outcome(
        fault.name,
        CallLog.codes(log.between(applied - BASELINE_S, applied)),
        CallLog.codes(log.between(applied, lifted)),
        CallLog.codes(log.between(lifted, now())),
        sum(record.late for record in log.between(applied - BASELINE_S, now())),
        None if recovered is None else round(recovered, 1),
    )


def _table(outcomes: list[Outcome]) -> str:
    lines = [f"mesh chaos: {CLIENTS} clients, faults held {HOLD_S:.0f} s, on {cpu_description()}"]
    for outcome in outcomes:
        recovered = "never" if outcome.recovered_s is None else f"{outcome.recovered_s:.1f} s"
        lines.append(f"  {outcome.fault:34} late {outcome.late}  recovered {recovered:>7}  during {outcome.during}")
        lines.append(f"  {'':34} after {outcome.after}")
    return "\n".join(lines)


async def test_every_fault_under_mixed_load(mesh: tuple[Mesh, str]) -> None:
    running, bootstrap = mesh
    key = await asyncio.to_thread(tenant_key, running.stack, bootstrap, running.target)
    faults = [fault for fault in catalogue(HOLD_S) if FULL or fault.name in SHORT]
    assert FULL or len(faults) == len(SHORT), "a short-form fault was renamed"
    faults = [fault for fault in faults if not ONLY or any(word in fault.name for word in ONLY)]
    shape = LoadShape(clients=CLIENTS, think_s=0.5, ingest_documents=200)
    load = MixedLoad(running.target, "chaos", shape, bearer(key), bearer(bootstrap), TENANT)
    outcomes = []
    async with load:
        for fault in faults:
            # Bounded: a fault whose lifting hangs fails the test instead of holding CI.
            limit_s = BASELINE_S + fault.hold_s + RECOVERY_LIMIT_S + 60
            outcomes.append(await asyncio.wait_for(_under(load, running, fault), limit_s))
            print(_table(outcomes[-1:]), flush=True)
    report = _table(outcomes)
    print(report)
    if REPORT:
        Path(REPORT).write_text(json.dumps([asdict(outcome) for outcome in outcomes], indent=1))

    assert not load.errors, load.errors
    assert not load.log.late(), load.log.late()[:5]
    codes = CallLog.codes(load.log.records)
    assert not {"UNKNOWN", "INTERNAL"} & codes.keys(), codes
    never = [outcome.fault for outcome in outcomes if outcome.recovered_s is None]
    assert not never, never
    assert load.written.jobs and not load.written.jobs_failed, load.written.jobs_failed
    # Nothing acknowledged was lost, nothing stored twice (stored_hashes fails on a repeated id).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.stack.ports.api}") as channel:
        indexed = await stored_hashes(channel, load.collection, bearer(key))
        ingested = await stored_hashes(channel, load.ingest_collection, bearer(key))
    lost = {i for i, h in load.written.indexed.items() if indexed.get(i) != h}
    assert not lost, f"{len(lost)} acknowledged documents lost or changed: {sorted(lost)[:5]}"
    assert ingested == load.written.ingested, (len(ingested), len(load.written.ingested))
