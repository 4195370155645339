"""What all calls being read may make a server hold together.

gRPC reads a request message only when the handler asks for it (until then HTTP/2 flow control
holds the sender back), and it may read up to the server's receive cap for any method
(`meshsearch_common.limits`). So each read in progress, and each open client stream (it may send
its next message at any time), holds the cap from a server-wide budget; when the budget is
spent, a call waits briefly and is then refused RESOURCE_EXHAUSTED (reason SERVER_BUSY). The
bytes a server holds for requests are thereby at most the budget, whoever sends them.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Gauge

from meshsearch_common.errors import ResourceExhausted

READ_BUDGET_HELD = Gauge("meshsearch_request_read_budget_bytes", "Bytes of the read budget held by calls being read.")
BUSY_RETRY_AFTER_S = 0.5


class ReadBudget:
    """Bytes that calls being read may hold at once (see the module docstring); `capacity` 0:
    no bound. Used from one event loop: nothing happens between a check and its update."""

    def __init__(self, capacity: int, max_wait_s: float = 1.0) -> None:
        self._capacity = capacity
        self._max_wait_s = max_wait_s
        self._held = 0
        self._freed = asyncio.Event()

    async def hold(self, size: int, time_left_s: float | None) -> int:
        """Take `size` bytes, waiting at most `max_wait_s` (or `time_left_s`, if less) for them;
        RESOURCE_EXHAUSTED when they do not come. Returns what was taken, for `give_back`."""
        if self._capacity <= 0:
            return 0
        size = min(size, self._capacity)
        loop = asyncio.get_running_loop()
        wait_s = self._max_wait_s if time_left_s is None else max(0.0, min(self._max_wait_s, time_left_s))
        give_up_at = loop.time() + wait_s
        while self._held + size > self._capacity:
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), max(0.0, give_up_at - loop.time()))
            except TimeoutError:
                raise ResourceExhausted(
                    "the server is reading as many requests as it may hold at once; retry shortly",
                    BUSY_RETRY_AFTER_S,
                    reason="SERVER_BUSY",
                ) from None
        self._held += size
        READ_BUDGET_HELD.set(self._held)
        return size

    def give_back(self, size: int) -> None:
        if size:
            self._held -= size
            self._freed.set()
            READ_BUDGET_HELD.set(self._held)
