"""Failed authentications counted per source, so that guessing keys costs the guesser, not us.

Two sources are counted apart, because they stop different attacks:
- per peer address: an address whose calls failed authentication `max_failures` times, each
  within `window_s` of the last, is refused RESOURCE_EXHAUSTED before any key is looked up,
  until it has been quiet for `window_s`;
- per key id (in the Authenticator): a key id whose secret was wrong that often is not
  verified again (no argon2) until quiet, and answers INVALID_API_KEY like any wrong key, so
  the lockout tells nothing a wrong key would not. Its holder's already-verified secret keeps
  working from the verification cache.
Counts live in bounded per-replica caches: a flood from many addresses evicts the oldest.
"""

from __future__ import annotations

import time

from cachetools import TTLCache
from prometheus_client import Counter

from meshsearch_common.clocks import Clock
from meshsearch_common.errors import ResourceExhausted

LOCKOUTS = Counter(
    "meshsearch_api_auth_lockouts_total", "Calls refused because their source failed authentication too often.", ["by"]
)
TRACKED_SOURCES = 100_000


class FailureCounter:
    """Failures per source, forgotten `window_s` after the last one."""

    def __init__(self, max_failures: int, window_s: float, clock: Clock = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._counts: TTLCache[str, int] = TTLCache(TRACKED_SOURCES, window_s, timer=clock)

    def record(self, source: str) -> None:
        if self.max_failures > 0:
            self._counts[source] = self._counts.get(source, 0) + 1  # setting it again restarts its window

    def locked(self, source: str) -> bool:
        return self.max_failures > 0 and self._counts.get(source, 0) >= self.max_failures


def peer_host(peer: str) -> str:
    """The address part of a gRPC peer string: 'ipv4:10.0.0.7:5301' -> 'ipv4:10.0.0.7',
    'ipv6:[::1]:5301' -> 'ipv6:[::1]'; anything else (unix sockets) as it is."""
    family, _, rest = peer.partition(":")
    if family == "ipv4":
        return f"ipv4:{rest.rpartition(':')[0]}"
    if family == "ipv6":
        return f"ipv6:{rest.rpartition(']')[0]}]"
    return peer


def refuse_locked_peer(counter: FailureCounter, host: str) -> None:
    """RESOURCE_EXHAUSTED when `host` is locked out."""
    if counter.locked(host):
        LOCKOUTS.labels("peer").inc()
        raise ResourceExhausted(
            f"too many failed authentications from this address; retry after {counter.window_s:g} s without one",
            counter.window_s,
            reason="TOO_MANY_FAILED_AUTHENTICATIONS",
            quota_subject=f"peer:{host}",
        )
