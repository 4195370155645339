"""The clocks that time-driven parts take (breakers, caches, token buckets, quotas), so that a
test can pass one it moves by hand instead of sleeping.

- `Clock`: monotonic seconds, for intervals (a TTL, a refill, a reset timeout);
- `WallClock`: an aware UTC datetime, for moments shared with others (a key's expiry, a UTC day).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]
WallClock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)
