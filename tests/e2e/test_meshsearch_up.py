"""`meshsearch up`: the embedded default starts everything, heals itself, leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psutil
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.stack import Ports
from tests import waiting


@dataclass
class Up:
    """A running `meshsearch up` and everything it printed so far."""

    process: subprocess.Popen[str]
    ports: Ports
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def service_pid(self, name: str) -> int:
        """The pid of the `python -m meshsearch_NAME` process that `up` runs now."""
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                cmdline = child.cmdline()
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue  # one just killed, not yet reaped
            if cmdline[-2:] == ["-m", f"meshsearch_{name}"] and child.status() != psutil.STATUS_ZOMBIE:
                return child.pid
        raise LookupError(f"no running {name} under meshsearch up:\n{self.output}")


def _read_lines(up: Up) -> None:
    assert up.process.stdout is not None
    for line in up.process.stdout:
        up.lines.append(line)


@pytest.fixture
def extra_env() -> dict[str, str]:
    """More environment for `meshsearch up`; a test parametrizes it to ask for more."""
    return {}


@pytest.fixture
def up(tmp_path: Path, extra_env: dict[str, str]) -> Iterator[Up]:
    ports = Ports.ephemeral()
    env = {
        **os.environ,
        "MESHSEARCH_DATA_DIR": str(tmp_path),
        "MESHSEARCH_API_PORT": str(ports.api),
        "MESHSEARCH_EMBEDDER_PORT": str(ports.embedder),
        "MESHSEARCH_SEARCH_PORT": str(ports.search),
        "MESHSEARCH_API_METRICS_PORT": str(ports.api_metrics),
        "MESHSEARCH_EMBEDDER_METRICS_PORT": str(ports.embedder_metrics),
        "MESHSEARCH_SEARCH_METRICS_PORT": str(ports.search_metrics),
        "MESHSEARCH_WORKER_PORT": str(ports.worker),
        "MESHSEARCH_WORKER_METRICS_PORT": str(ports.worker_metrics),
        "MESHSEARCH_API_EMBEDDER_POLICY__BREAKER_RESET_TIMEOUT_S": "1",
        "MESHSEARCH_API_SEARCH_POLICY__BREAKER_RESET_TIMEOUT_S": "1",
        **extra_env,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "meshsearch_cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Up(process, ports, tmp_path)
    threading.Thread(target=_read_lines, args=(running,), daemon=True).start()
    try:  # a start that fails must still stop what started and close the pipe
        deadline = time.monotonic() + 180
        while "Ctrl-C stops everything" not in running.output and process.poll() is None:
            assert time.monotonic() < deadline, running.output
            time.sleep(0.1)
        assert "meshsearch is up" in running.output, running.output
        yield running
    finally:
        # Stop it as a user would (Ctrl-C), so it stops its services; a SIGKILL would orphan them.
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_up_reports_every_service_and_ctrl_c_leaves_no_process_behind(up: Up) -> None:
    for port in (up.ports.api, up.ports.embedder, up.ports.search, up.ports.worker):
        assert f"127.0.0.1:{port}" in up.output
    descendants = psutil.Process(up.process.pid).children(recursive=True)
    # The service processes run in their own sessions; find them by their command line too.
    descendants += [
        p for p in psutil.process_iter(["cmdline"]) if str(up.data_dir) in " ".join(p.info["cmdline"] or [])
    ]
    assert len({p.pid for p in descendants}) >= 5  # redis, api, embedder, search, worker (+ postgres)

    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(60) == 0

    def alive() -> list[psutil.Process]:
        return [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    waiting.until_sync(lambda: not alive(), timeout_s=10, what=f"every child exits: {alive()}")
    assert (up.data_dir / "pgdata" / "PG_VERSION").exists()  # data kept between runs


def search_succeeds(api: pb_grpc.SearchServiceStub, collection: str) -> bool:
    """A vector search answered as asked (not degraded to keyword search for want of the embedder)."""
    request = pb.SearchRequest(collection=collection, query=f"a fox {uuid.uuid4().hex}")
    try:
        response = api.Search(request, timeout=5)
    except grpc.RpcError:
        return False
    return len(response.hits) == 1 and not response.degraded


@pytest.mark.parametrize("victim", ["embedder", "search", "api"])
def test_a_service_killed_under_up_is_restarted_and_searches_succeed_again(up: Up, victim: str) -> None:
    name = f"healing_{victim}"
    with grpc.insecure_channel(f"127.0.0.1:{up.ports.api}") as channel:
        pb_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=30
        )
        pb_grpc.DocumentServiceStub(channel).IndexDocuments(
            pb.IndexDocumentsRequest(collection=name, documents=[pb.Document(id="1", text="the quick brown fox")]),
            timeout=30,
        )
        search = pb_grpc.SearchServiceStub(channel)
        assert search_succeeds(search, name)

        old_pid = up.service_pid(victim)
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while not search_succeeds(search, name):
            assert time.monotonic() - killed_at < 90, f"searches did not come back:\n{up.output}"
            time.sleep(0.25)
        print(f"{victim}: searches succeed again {time.monotonic() - killed_at:.1f}s after kill -9")

    assert f"{victim} exited unexpectedly (killed by SIGKILL); restarting" in up.output
    assert up.service_pid(victim) != old_pid
    assert "restarted" in (up.data_dir / "logs" / f"{victim}.log").read_text()
    assert up.process.poll() is None  # the rest kept running
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(60) == 0


def thread_cpus(pid: int) -> set[frozenset[int]]:
    """The CPU sets that the threads of process `pid` may run on (one per distinct set)."""
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.parametrize("extra_env", [{"MESHSEARCH_STACK_EMBEDDER_CPUS": "0"}])
def test_up_runs_the_embedder_on_cpus_of_its_own_even_after_a_restart(up: Up) -> None:
    others = frozenset(os.sched_getaffinity(0)) - {0}
    assert others, "this test needs two CPUs"
    assert thread_cpus(up.service_pid("embedder")) == {frozenset({0})}
    for name in ("api", "search", "api.ingest.worker"):
        assert thread_cpus(up.service_pid(name)) == {others}, name
    postmaster = int((up.data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
    backends = psutil.Process(postmaster).children()
    assert backends and all(frozenset(p.cpu_affinity()) == others for p in [psutil.Process(postmaster), *backends])
    redis = [p for p in psutil.Process(up.process.pid).children() if "redis-server" in " ".join(p.cmdline())]
    assert len(redis) == 2 and all(thread_cpus(server.pid) == {others} for server in redis)  # cache and state

    killed = up.service_pid("embedder")
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, f"the embedder was not restarted:\n{up.output}"
        try:
            restarted = up.service_pid("embedder")
        except LookupError:
            restarted = killed
        if restarted != killed:
            break
        time.sleep(0.2)
    assert thread_cpus(restarted) == {frozenset({0})}
