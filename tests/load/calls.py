"""Every call a load made, and what a fault test or a soak asks of them: calls held past their
deadline, status codes by phase, and when the mesh answered again after a fault."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import grpc

# A call that ends later than its deadline by more than this was held too long: the client's
# own deadline timer and the event loop's scheduling on a busy 2-core machine account for less.
LATE_S = 0.5
# Calls in a row, ordered by start, that must all succeed before the mesh counts as recovered.
RECOVERED_STREAK = 20


@dataclass(frozen=True)
class CallRecord:
    operation: str
    started: float  # time.monotonic()
    seconds: float
    code: grpc.StatusCode
    deadline_s: float
    degraded: bool = False

    @property
    def ended(self) -> float:
        return self.started + self.seconds

    @property
    def late(self) -> bool:
        return self.seconds > self.deadline_s + LATE_S


@dataclass
class CallLog:
    """The calls of one load, appended as they end (one event loop: no lock needed)."""

    records: list[CallRecord] = field(default_factory=list)

    def add(self, record: CallRecord) -> None:
        self.records.append(record)

    def between(self, start: float, end: float) -> list[CallRecord]:
        """The calls that started in [start, end)."""
        return [record for record in self.records if start <= record.started < end]

    def late(self) -> list[CallRecord]:
        return [record for record in self.records if record.late]

    @staticmethod
    def codes(records: list[CallRecord]) -> dict[str, int]:
        """How many calls ended with each status code (degraded answers apart)."""
        counted = Counter(f"{record.code.name}{' (degraded)' if record.degraded else ''}" for record in records)
        return dict(sorted(counted.items()))

    def recovered_after(self, since: float, streak: int = RECOVERED_STREAK) -> float | None:
        """Seconds from `since` to the start of the first `streak` calls in a row (by start)
        that all succeeded undegraded; None if that never happened."""
        run: list[CallRecord] = []
        for record in sorted(self.between(since, float("inf")), key=lambda r: r.started):
            if record.code == grpc.StatusCode.OK and not record.degraded:
                run.append(record)
                if len(run) == streak:
                    return run[0].started - since
            else:
                run = []
        return None


def now() -> float:
    return time.monotonic()
