"""The embedded stack's supervisor: restart with backoff, give up on a crash loop."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from meshsearch_cli.stack import EmbeddedStack
from meshsearch_cli.supervisor import GaveUp, RestartPolicy, Supervisor, describe_exit
from meshsearch_common.backoff import Backoff
from tests.clock import FakeClock


@dataclass
class FakeProcess:
    pid: int
    returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


@dataclass
class FakeStack:
    data_dir: Path
    processes: dict[str, FakeProcess] = field(default_factory=dict)
    restarts: list[str] = field(default_factory=list)

    def log_path(self, name: str) -> Path:
        return self.data_dir / f"{name}.log"

    def restart(self, name: str) -> None:
        self.restarts.append(name)
        self.processes[name] = FakeProcess(pid=100 + len(self.restarts))


def make(tmp_path: Path, policy: RestartPolicy) -> tuple[FakeStack, Supervisor, FakeClock, list[str]]:
    stack = FakeStack(tmp_path, {"embedder": FakeProcess(1), "api": FakeProcess(2)})
    clock, told = FakeClock(), list[str]()
    supervisor = Supervisor(cast(Any, stack), policy, notify=told.append, clock=clock)
    supervisor.check()
    return stack, supervisor, clock, told


def test_a_crashed_service_is_restarted_after_a_backoff_and_the_rest_keep_running(tmp_path: Path) -> None:
    stack, supervisor, clock, told = make(tmp_path, RestartPolicy(backoff=Backoff(0.5, 30, "none")))
    stack.processes["embedder"].returncode = -9
    supervisor.check()
    assert stack.restarts == []
    assert "embedder exited unexpectedly (killed by SIGKILL); restarting in 0.5s" in told[0]
    clock.now += 0.6
    supervisor.check()
    assert stack.restarts == ["embedder"]
    assert stack.processes["api"].pid == 2  # untouched
    assert "embedder restarted" in (tmp_path / "embedder.log").read_text()  # its own log says so


def test_backoff_doubles_per_crash_in_a_row_and_resets_once_a_process_stays_up(tmp_path: Path) -> None:
    policy = RestartPolicy(backoff=Backoff(0.5, 30, "none"), stable_after_s=60, max_fast_crashes=10)
    stack, supervisor, clock, told = make(tmp_path, policy)
    for expected in ("0.5s", "1.0s", "2.0s"):
        stack.processes["embedder"].returncode = 1
        supervisor.check()
        assert f"restarting in {expected}" in told[-1]
        clock.now += 5
        supervisor.check()
    clock.now += 61  # stayed up: the next crash starts over
    supervisor.check()
    stack.processes["embedder"].returncode = 1
    supervisor.check()
    assert "restarting in 0.5s" in told[-1]


def test_repeated_fast_crashes_give_up_with_the_service_and_its_log(tmp_path: Path) -> None:
    stack, supervisor, clock, _ = make(tmp_path, RestartPolicy(backoff=Backoff(0.1, 30, "none"), max_fast_crashes=2))
    for _ in range(2):
        stack.processes["search"] = stack.processes.get("search") or FakeProcess(3)
        stack.processes["embedder"].returncode = 3
        supervisor.check()
        clock.now += 1
        supervisor.check()
    stack.processes["embedder"].returncode = 3
    with pytest.raises(GaveUp, match=r"embedder exited \(exit code 3\) 3 times in a row.*embedder\.log"):
        supervisor.check()


def test_exits_are_described_for_people() -> None:
    assert describe_exit(-15) == "killed by SIGTERM"
    assert describe_exit(2) == "exit code 2"


def test_the_real_stack_offers_what_the_supervisor_needs() -> None:
    for method in ("log_path", "restart"):
        assert callable(getattr(EmbeddedStack, method))


class VanishingProcesses(dict[str, FakeProcess]):
    """Processes of which one is stopped on purpose (stop_service, on another thread) between
    the supervisor listing them and looking at it."""

    def __iter__(self) -> Iterator[str]:
        yield from [*super().__iter__(), "stopped-meanwhile"]


def test_a_service_stopped_on_purpose_while_the_supervisor_looks_is_left_alone(tmp_path: Path) -> None:
    stack, supervisor, clock, told = make(tmp_path, RestartPolicy())
    stack.processes = VanishingProcesses(stack.processes)
    clock.advance(1)
    supervisor.check()  # no KeyError from the process that is gone
    assert stack.restarts == [] and told == []
