"""A clock that tests move by hand, for the parts of the mesh that take one (breakers, caches,
token buckets, quotas): time passes when the test says so, never by sleeping."""

from __future__ import annotations

from datetime import UTC, datetime


class FakeClock:
    """Seconds that only `advance` moves; call it for the monotonic clock, `wall` for the
    matching UTC datetime (meshsearch_common.clocks)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def advance(self, seconds: float) -> None:
        self.now += seconds
