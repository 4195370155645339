"""The soak: 64 mixed clients (tests/load/mixed.py) on a stack of its own with auth on, while
every process's memory, open files and connections, the database's connections and tables,
both Redis servers and every service's latency are sampled (tests/load/sampling.py).

`make test` runs the short form (90 s): no call held past its deadline, no UNKNOWN or INTERNAL,
every ingest job completed. `make soak` runs the full form (an hour; SOAK_S=... shortens it),
which adds the verdict on growth: no series may grow more than 10 % over the run's last half;
and plots every series to MESHSEARCH_SOAK_PLOT (docs/images/soak.png).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshsearch_cli.stack import EmbeddedStack, Ports
from meshsearch_harness.figures import cpu_description, percentile
from meshsearch_harness.secured import bearer
from tests.load.calls import CallLog, now
from tests.load.mixed import LoadShape, MixedLoad
from tests.load.sampling import GROWTH_LIMIT, Sampler
from tests.load.secured_stack import TENANT, auth_env, new_bootstrap_key, tenant_key

SOAK_S = float(os.environ.get("MESHSEARCH_SOAK_S", "90"))
FULL = SOAK_S >= 600  # long enough for warm-up to be over by the run's last half
SAMPLE_EVERY_S = 10.0 if FULL else 5.0
CLIENTS = 64
PLOT = os.environ.get("MESHSEARCH_SOAK_PLOT", "")
RETENTION_S = 120


@pytest.fixture(scope="module")
def soak_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedStack, str]]:
    """A stack of its own (its processes are the ones sampled) with auth on; its bootstrap key."""
    bootstrap = new_bootstrap_key()
    stack = EmbeddedStack(
        tmp_path_factory.mktemp("soak"),
        Ports.ephemeral(),
        extra_env={
            **auth_env(bootstrap),
            # Ended jobs and revoked keys go after two minutes (days by default), so that an
            # hour shows the job and key tables level off instead of growing with every job.
            "MESHSEARCH_WORKER_JOB_RETENTION_S": str(RETENTION_S),
            "MESHSEARCH_WORKER_KEY_RETENTION_S": str(RETENTION_S),
        },
    )
    with stack.running():
        yield stack, bootstrap


def _report(log: CallLog, sampler: Sampler, seconds: float) -> str:
    lines = [f"soak: {seconds:.0f} s, {CLIENTS} clients, {len(log.records)} calls on {cpu_description()}"]
    by_operation: dict[str, list[float]] = {}
    for record in log.records:
        by_operation.setdefault(record.operation, []).append(record.seconds)
    for operation, times in sorted(by_operation.items()):
        lines.append(
            f"  {operation:16} {len(times):7} calls  p50 {percentile(times, 50) * 1000:7.1f} ms"
            f"  p99 {percentile(times, 99) * 1000:7.1f} ms"
        )
    lines.append(f"  codes: {CallLog.codes(log.records)}")
    lines.append(f"  {'series':42} {'3rd quarter':>12} {'last quarter':>12} {'growth':>7}")
    for name, before, after, growth in sampler.growth():
        lines.append(f"  {name:42} {before:12.1f} {after:12.1f} {growth:7.1%}")
    return "\n".join(lines)


async def test_mixed_load_holds_steady(soak_stack: tuple[EmbeddedStack, str]) -> None:
    stack, bootstrap = soak_stack
    key = await asyncio.to_thread(tenant_key, stack, bootstrap)
    shape = LoadShape(clients=CLIENTS, think_s=1.0, index_ids=2_000, ingest_documents=300, ingest_new_ids=False)
    load = MixedLoad(
        f"127.0.0.1:{stack.ports.api}",
        "soak",
        shape,
        metadata=bearer(key),
        admin_metadata=bearer(bootstrap),
        tenant=TENANT,
    )
    async with load:
        sampler = Sampler(stack, load.log)
        started = now()
        while now() - started < SOAK_S:
            await asyncio.sleep(SAMPLE_EVERY_S)
            await asyncio.to_thread(sampler.sample)
    seconds = now() - started
    report = _report(load.log, sampler, seconds)
    print(report)
    if PLOT:
        sampler.plot(Path(PLOT), f"meshsearch soak, {seconds / 60:.0f} min, {CLIENTS} clients, {cpu_description()}")
        sampler.save(Path(PLOT).with_suffix(".json"))
    assert not load.errors, load.errors
    assert not load.log.late(), load.log.late()[:5]
    codes = CallLog.codes(load.log.records)
    assert not {"UNKNOWN", "INTERNAL"} & codes.keys(), codes
    failed = sum(count for code, count in codes.items() if not code.startswith("OK"))
    assert failed <= len(load.log.records) * 0.001, codes  # a healthy mesh under steady load
    assert load.written.jobs and not load.written.jobs_failed, load.written.jobs_failed
    if FULL:
        grown = [row for row in sampler.growth() if row[3] > GROWTH_LIMIT]
        assert not grown, grown
