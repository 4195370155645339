"""The one kind of PostgreSQL pool every service opens: psycopg_pool's, with two bounds it lacks.

- **Reconnect delays are capped.** psycopg_pool retries a failed connection after 1, 2, 4, 8,
  16, 32 ... seconds (doubling until `reconnect_timeout`, five minutes by default). A PostgreSQL
  that is back after 20 s was therefore found about 31 s later (kill -9 under load measured 36.6 s
  of outage, docs/reliability.md), and a pool opened while PostgreSQL was still starting could
  miss a 60 s start-up wait altogether with its next attempt due at 63 s. Here the delay doubles
  as before but never exceeds `MAX_RECONNECT_DELAY_S`.
- **A connection attempt has a time limit.** Without `connect_timeout`, libpq waits on a silent
  network path (a vanished node, a dropped SYN) for as long as the kernel does, minutes, and the
  pool's slot is held all that time. Unless the URL names its own, attempts give up after
  `CONNECT_TIMEOUT_S` and are retried like any other failure.

psycopg_pool has no setting for either (its backoff constants live on `AttemptWithBackoff`), so
`ReconnectingPool` hands its own attempt object to the one method that creates attempts.
"""

from __future__ import annotations

from typing import Any, ClassVar

import psycopg.conninfo
from psycopg_pool import AsyncConnectionPool
from psycopg_pool.base import AttemptWithBackoff

MAX_RECONNECT_DELAY_S = 2.0
CONNECT_TIMEOUT_S = 5


class CappedBackoff(AttemptWithBackoff):
    """psycopg_pool's jittered exponential backoff, with the delay capped at `max_delay_s`."""

    max_delay_s: ClassVar[float] = MAX_RECONNECT_DELAY_S

    def update_delay(self, now: float) -> None:
        super().update_delay(now)
        self.delay = min(self.delay, self.max_delay_s)


class ReconnectingPool(AsyncConnectionPool):
    """An `AsyncConnectionPool` whose reconnect attempts back off to at most `backoff.max_delay_s`
    and whose connection attempts time out (see the module's docstring)."""

    backoff: ClassVar[type[AttemptWithBackoff]] = CappedBackoff

    def __init__(self, conninfo: str = "", *, kwargs: dict[str, Any] | None = None, **options: Any) -> None:
        kwargs = dict(kwargs or {})
        if "connect_timeout" not in psycopg.conninfo.conninfo_to_dict(conninfo):
            kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
        super().__init__(conninfo, kwargs=kwargs, **options)

    async def _add_connection(self, attempt: AttemptWithBackoff | None, growing: bool = False) -> None:
        await super()._add_connection(attempt or self.backoff(timeout=self.reconnect_timeout), growing)
