"""An asyncio circuit breaker driven by pybreaker's state machine.

pybreaker decides *when* to trip, stay open and close, but its `call()` is synchronous (its
`call_async` needs Tornado, and decorating an `async def` only guards the creation of the
coroutine, never its failures). This adapter splits a guarded call in two:

1. admission, before awaiting: closed admits; open rejects until the reset timeout has passed,
   then moves to half-open and admits exactly one trial call; half-open rejects while that
   trial is in flight;
2. outcome, after awaiting: the result or exception is replayed through pybreaker's own
   `call()`, so its counters, thresholds, listeners and transitions do the bookkeeping.

Everything runs on the event loop thread; pybreaker's lock is uncontended and never blocks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pybreaker

T = TypeVar("T")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN


class BreakerOpen(Exception):
    """Raised instead of calling the upstream while its breaker is open."""

    def __init__(self, name: str, retry_after_s: float) -> None:
        super().__init__(
            f"circuit breaker for upstream '{name}' is open after repeated failures; "
            f"failing fast, next trial in {retry_after_s:.1f}s"
        )
        self.name = name
        self.retry_after_s = retry_after_s


class AsyncCircuitBreaker:
    """Guards awaitable calls to one upstream.

    `is_failure(exc)` says whether an exception shows the upstream is sick. Exceptions for
    which it is False (caller errors) are re-raised but count as a healthy answer.
    """

    def __init__(
        self,
        name: str,
        *,
        fail_max: int,
        reset_timeout_s: float,
        is_failure: Callable[[BaseException], bool],
        listeners: list[pybreaker.CircuitBreakerListener] | None = None,
    ) -> None:
        self.name = name
        self._storage = pybreaker.CircuitMemoryStorage(CLOSED)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_s,
            exclude=[lambda exc: not is_failure(exc)],
            listeners=listeners,
            state_storage=self._storage,
            name=name,
        )
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half-open'."""
        return self._breaker.current_state

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` if the breaker admits it; raise BreakerOpen at once otherwise."""
        is_trial = self._admit()
        try:
            result = await operation()
        except BaseException as exc:
            self._record(_raiser(exc), is_trial)
            raise
        self._record(lambda: result, is_trial)
        return result

    def _admit(self) -> bool:
        """Return True when this call is the half-open trial; raise BreakerOpen to reject."""
        state = self.state
        if state == CLOSED:
            return False
        if state == OPEN:
            remaining = self._seconds_until_trial()
            if remaining > 0:
                raise BreakerOpen(self.name, remaining)
            self._breaker.half_open()
        if self._trial_in_flight:
            raise BreakerOpen(self.name, 0.0)
        self._trial_in_flight = True
        return True

    def _record(self, replay: Callable[[], object], is_trial: bool) -> None:
        if is_trial:
            self._trial_in_flight = False
        try:
            self._breaker.call(replay)
        except BaseException:  # noqa: BLE001 - the replayed exception, or pybreaker's trip error
            pass

    def _seconds_until_trial(self) -> float:
        opened_at = self._storage.opened_at
        if opened_at is None:
            return 0.0
        reopen = opened_at + timedelta(seconds=self._breaker.reset_timeout)
        return max(0.0, (reopen - datetime.now(UTC)).total_seconds())


def _raiser(exc: BaseException) -> Callable[[], object]:
    """A function that re-raises `exc`: how a failure is replayed through pybreaker."""

    def replay() -> object:
        raise exc

    return replay


__all__ = ["AsyncCircuitBreaker", "BreakerOpen", "CLOSED", "OPEN", "HALF_OPEN"]
