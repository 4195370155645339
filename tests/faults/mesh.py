"""A supervised stack whose every gRPC hop and the api's Redis link run through a FaultProxy,
with a synchronous streaming standby of its PostgreSQL that the services fail over to (their
URLs list both servers and accept only the writable one); and the faults a mixed-load fault
test applies to it: a process killed (SIGKILL), frozen (SIGSTOP, then SIGCONT) or restarted
(SIGTERM, then started again); Redis flushed; a link that vanishes, resets, goes silent or
slows down; PostgreSQL's disk filled (its data directory is a tmpfs of DISK_MB, filled with a
ballast file; mounting one needs root, so only `make chaos` has this fault); the primary
PostgreSQL killed and the standby promoted.

The supervisor restarts what exits, as `meshsearch up` does; PostgreSQL, which `up` does not
supervise, is started again by its fault once its downtime is over.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil
import psycopg
import redis

from meshsearch_cli.stack import REDIS_SERVERS, EmbeddedStack, Ports, free_port
from tests.e2e.chaos import SupervisedStack
from tests.faults.proxy import Fault, FaultProxy
from tests.faults.standby import Standby, failover_url, require_synchronous_commit, start_standby

# hop -> the setting that points its client at the proxy, or None for the load's own hop
HOPS = {
    "client→api": None,
    "api→search": "MESHSEARCH_API_SEARCH_TARGET",
    "api→embedder": "MESHSEARCH_API_EMBEDDER_TARGET",
    "worker→search": "MESHSEARCH_WORKER_SEARCH_TARGET",
    "worker→embedder": "MESHSEARCH_WORKER_EMBEDDER_TARGET",
    "api→redis-state": "MESHSEARCH_API_STATE_REDIS_URL",
}
PROCESSES = ("api", "worker", "embedder", "search", "redis", "redis-state", "postgres")
POSTGRES_DOWN_S = 3.0
BALLAST = "disk-full.ballast"
DISK_MB = 2048  # the tmpfs under PostgreSQL's data directory, for the full-disk fault
STORM_MAX = 1000  # connections a storm opens at most; PostgreSQL's default max_connections is 100


@dataclass
class Mesh:
    supervised: SupervisedStack
    hops: dict[str, FaultProxy]
    standby: Standby

    @property
    def stack(self) -> EmbeddedStack:
        return self.supervised.stack

    @property
    def target(self) -> str:
        """Where clients call the api: through the client→api proxy."""
        return f"127.0.0.1:{self.hops['client→api'].port}"

    def processes(self, name: str) -> list[psutil.Process]:
        """Process `name`, with its children (PostgreSQL's backends are its postmaster's)."""
        pid = self.stack.pid(name)
        assert pid is not None, f"{name} is not running"
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]


def start_mesh(data_dir: Path, extra_env: dict[str, str], small_disk: bool = False) -> Mesh:
    """Start the stack with a proxy in front of each upstream of each hop (and PostgreSQL on a
    disk of DISK_MB that the full-disk fault can fill, if `small_disk`); stop with `stop_mesh`."""
    if small_disk:
        if os.geteuid() != 0:
            raise PermissionError("the full-disk fault mounts a tmpfs for PostgreSQL's data: run it as root")
        (data_dir / "pgdata").mkdir(parents=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(data_dir / "pgdata")], check=True
        )
    ports = Ports.ephemeral()
    ports = replace(ports, state_redis=free_port())
    upstream = {
        "client→api": ports.api,
        "api→search": ports.search,
        "api→embedder": ports.embedder,
        "worker→search": ports.search,
        "worker→embedder": ports.embedder,
        "api→redis-state": ports.state_redis,
    }
    hops = {hop: FaultProxy(port).__enter__() for hop, port in upstream.items()}
    stack = EmbeddedStack(data_dir, ports, extra_env=dict(extra_env))
    for hop, setting in HOPS.items():
        if setting is None:
            continue
        if setting.endswith("_URL"):
            stack.extra_env[setting] = f"redis://:{stack.redis_password}@127.0.0.1:{hops[hop].port}/0"
        else:
            stack.extra_env[setting] = f"127.0.0.1:{hops[hop].port}"
    stack.start_stores()
    assert stack.databases is not None
    standby = start_standby(stack.data_dir / "pgdata", stack.database_url, stack.data_dir / "standby")
    require_synchronous_commit(stack.database_url)
    stack.extra_env["MESHSEARCH_SEARCH_DATABASE_URL"] = failover_url(stack.databases.search_url, standby)
    for client in ("API", "WORKER"):
        stack.extra_env[f"MESHSEARCH_{client}_JOBS_DATABASE_URL"] = failover_url(stack.databases.jobs_url, standby)
    stack.start()
    return Mesh(SupervisedStack(stack).__enter__(), hops, standby)


def stop_mesh(mesh: Mesh) -> None:
    mesh.supervised.__exit__()
    mesh.stack.stop()
    mesh.standby.stop()
    pgdata = mesh.stack.data_dir / "pgdata"
    if os.path.ismount(pgdata):
        subprocess.run(["umount", "--lazy", str(pgdata)], check=True)
    for proxy in mesh.hops.values():
        proxy.__exit__()


@dataclass(frozen=True)
class MeshFault:
    """A fault applied, held for `hold_s`, then lifted (both run on a thread)."""

    name: str
    apply: Callable[[Mesh], None]
    lift: Callable[[Mesh], None] = lambda mesh: None
    hold_s: float = 0.0


def _kill(name: str) -> MeshFault:
    def apply(mesh: Mesh) -> None:
        mesh.stack.kill(name)  # the supervisor restarts a service or a Redis server

    def lift(mesh: Mesh) -> None:
        if name == "postgres":
            mesh.stack.restart("postgres")

    return MeshFault(f"kill -9 {name}", apply, lift, POSTGRES_DOWN_S if name == "postgres" else 0.0)


def _signal_all(name: str, signum: signal.Signals) -> Callable[[Mesh], None]:
    def send(mesh: Mesh) -> None:
        for process in mesh.processes(name):
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass  # a backend that ended meanwhile

    return send


def _freeze(name: str, hold_s: float) -> MeshFault:
    return MeshFault(
        f"SIGSTOP {name} {hold_s:.0f} s", _signal_all(name, signal.SIGSTOP), _signal_all(name, signal.SIGCONT), hold_s
    )


def _restart(name: str) -> MeshFault:
    """A graceful restart (SIGTERM: drain, exit), as a rolling update does."""

    def apply(mesh: Mesh) -> None:
        mesh.stack.stop_service(name)
        mesh.stack.restart(name)
        if name not in REDIS_SERVERS:
            mesh.stack.wait_service(name)

    return MeshFault(f"restart {name}", apply)


def _flush(mesh: Mesh) -> None:
    for attribute, *_ in REDIS_SERVERS.values():
        port = getattr(mesh.stack.ports, attribute)
        redis.Redis(port=port, password=mesh.stack.redis_password).flushall()


def _link(hop: str, fault: Fault, label: str, hold_s: float) -> MeshFault:
    def apply(mesh: Mesh) -> None:
        mesh.hops[hop].set(fault)

    def lift(mesh: Mesh) -> None:
        mesh.hops[hop].set(Fault.PASS)

    return MeshFault(f"{label} {hop}", apply, lift, hold_s)


def _fill_disk(mesh: Mesh) -> None:
    """Take every free byte of PostgreSQL's disk with a ballast file."""
    pgdata = mesh.stack.data_dir / "pgdata"
    assert os.path.ismount(pgdata), "the mesh was started without small_disk"
    size, step = 0, 64 * 2**20
    with (pgdata / BALLAST).open("wb") as ballast:
        while step >= 4096:  # grow until ENOSPC, in smaller steps each time (PostgreSQL writes meanwhile)
            try:
                os.posix_fallocate(ballast.fileno(), size, step)
                size += step
            except OSError:
                step //= 4


def _free_disk(mesh: Mesh) -> None:
    """Drop the ballast; start PostgreSQL again if it stopped (a full WAL disk makes it PANIC)."""
    (mesh.stack.data_dir / "pgdata" / BALLAST).unlink()
    pid = mesh.stack.pid("postgres")
    if pid is None or not psutil.pid_exists(pid):
        mesh.stack.restart("postgres")


@dataclass
class _Storm:
    """Connections to PostgreSQL opened until it refuses more (past max_connections), as a
    misconfigured fleet of clients would, held, then closed."""

    held: list[psycopg.Connection[tuple[object, ...]]] = field(default_factory=list)

    def apply(self, mesh: Mesh) -> None:
        assert mesh.stack.databases is not None
        while len(self.held) < STORM_MAX:
            try:
                self.held.append(psycopg.connect(mesh.stack.databases.jobs_url, connect_timeout=5))
            except psycopg.OperationalError:
                return  # refused: "too many clients already"
        raise AssertionError(f"PostgreSQL took {STORM_MAX} connections without refusing one")

    def lift(self, mesh: Mesh) -> None:
        for conn in self.held:
            conn.close()
        self.held.clear()


def _storm(hold_s: float) -> MeshFault:
    storm = _Storm()
    return MeshFault(f"PostgreSQL connections exhausted {hold_s:.0f} s", storm.apply, storm.lift, hold_s)


def _failover(mesh: Mesh) -> None:
    mesh.stack.kill("postgres")
    mesh.standby.promote()


def catalogue(hold_s: float) -> list[MeshFault]:
    """Every fault: each process killed, frozen and restarted; Redis flushed; each hop's link
    vanished, reset, silent and slowed; last, the failover (the old primary stays dead)."""
    faults: list[MeshFault] = []
    for name in PROCESSES:
        faults.append(_kill(name))
        faults.append(_freeze(name, hold_s))
        if name != "postgres":
            faults.append(_restart(name))
    faults.append(MeshFault("FLUSHALL both Redis", _flush))
    for hop in HOPS:
        faults.append(_link(hop, Fault.VANISH, "vanish", 0.0))
        faults.append(_link(hop, Fault.RESET, "reset", hold_s))
        faults.append(_link(hop, Fault.SILENT, f"silent {hold_s:.0f} s", hold_s))
        faults.append(_link(hop, Fault.delay(0.2, 0.1), f"200±100 ms {hold_s:.0f} s", hold_s))
    faults.append(MeshFault(f"PostgreSQL disk full {hold_s:.0f} s", _fill_disk, _free_disk, hold_s))
    faults.append(_storm(hold_s))
    faults.append(MeshFault("failover to the standby", _failover))
    return faults
