"""An asyncio circuit breaker driven by pybreaker's state machine.

pybreaker decides *when* to trip, stay open and close, but its `call()` is synchronous (its
`call_async` needs Tornado, and decorating an `async def` only guards the creation of the
coroutine, never its failures). This adapter splits a guarded call in two:

1. admission, before awaiting: closed admits; open rejects until the reset timeout has passed,
   then moves to half-open and admits exactly one trial call; half-open rejects while that
   trial is in flight;
2. outcome, after awaiting: the result or exception is replayed through pybreaker's own
   `call()`, so its counters, thresholds, listeners and transitions do the bookkeeping. An
   exception that is not a failure (a caller error) is replayed as a success: the upstream
   answered sanely. A cancellation (our own caller gave up) is not replayed at all: it says
   nothing about the upstream, and counting it as a success would reset the failure count of
   a hung upstream while its callers cancel one after another.

Everything runs on the event loop thread; pybreaker's lock is uncontended and never blocks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pybreaker

T = TypeVar("T")

# How long a caller that asked to go ahead (and so will make the trial call) keeps other askers
# waiting; it lapses if that caller never calls (it failed elsewhere first).
TRIAL_CLAIM_S = 1.0

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

    `is_failure(exc)` says whether an exception shows the upstream is sick (a call may pass its
    own judge). Exceptions for which it is False (caller errors) are re-raised but count as a
    healthy answer. `clock` (seconds, monotonic) times the open state and trial claims; tests
    pass one they advance by hand.
    """

    def __init__(
        self,
        name: str,
        *,
        fail_max: int,
        reset_timeout_s: float,
        is_failure: Callable[[BaseException], bool],
        listeners: list[pybreaker.CircuitBreakerListener] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._is_failure = is_failure
        self._clock = clock
        self._opened_at = 0.0  # clock() when the breaker last opened
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_s,
            listeners=[*(listeners or []), _OpenedAt(self)],
            state_storage=pybreaker.CircuitMemoryStorage(CLOSED),
            name=name,
        )
        self._trial_in_flight = False
        self._trial_claimed_until = 0.0  # clock(); see rejecting_for_s(claim=True)

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half-open'."""
        return self._breaker.current_state

    async def call(
        self, operation: Callable[[], Awaitable[T]], is_failure: Callable[[BaseException], bool] | None = None
    ) -> T:
        """Run `operation` if the breaker admits it; raise BreakerOpen at once otherwise.
        `is_failure` overrides the breaker's judge for this call."""
        judge = is_failure or self._is_failure
        is_trial = self._admit()
        try:
            result = await operation()
        except asyncio.CancelledError:
            self._release(is_trial)
            raise
        except BaseException as exc:
            self._record(_raiser(exc) if judge(exc) else _succeed, is_trial)
            raise
        self._record(_succeed, is_trial)
        return result

    def rejecting_for_s(self, claim: bool = False) -> float | None:
        """If a call now would be rejected, the seconds until one may be admitted (0 while a
        half-open trial is in flight or claimed); None if it would be admitted. Lets a caller
        skip work that needs this upstream later in the same call. With `claim`, a caller told
        None when the next call is the trial claims it for TRIAL_CLAIM_S: other askers are told
        to wait, so only one request spends work (say, an embedding) on the way to the trial."""
        state = self.state
        if state == CLOSED:
            return None
        if state == OPEN:
            remaining = self._seconds_until_trial()
            if remaining > 0:
                return remaining
        now = self._clock()
        if self._trial_in_flight or now < self._trial_claimed_until:
            return 0.0
        if claim:
            self._trial_claimed_until = now + TRIAL_CLAIM_S
        return None

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
        self._trial_claimed_until = 0.0
        return True

    def _release(self, is_trial: bool) -> None:
        """Let the next call be the trial when this one ends without a verdict."""
        if is_trial:
            self._trial_in_flight = False

    def _record(self, replay: Callable[[], object], is_trial: bool) -> None:
        self._release(is_trial)
        try:
            self._breaker.call(replay)
        except BaseException:  # noqa: BLE001 - the replayed exception, or pybreaker's trip error
            pass

    def _seconds_until_trial(self) -> float:
        return max(0.0, self._opened_at + self._breaker.reset_timeout - self._clock())


class _OpenedAt(pybreaker.CircuitBreakerListener):
    """Notes, on the breaker's own clock, when pybreaker opens it."""

    def __init__(self, breaker: AsyncCircuitBreaker) -> None:
        self._breaker = breaker

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        if new_state.name == OPEN:
            self._breaker._opened_at = self._breaker._clock()


def _succeed() -> None:
    """How a healthy answer is replayed through pybreaker."""


def _raiser(exc: BaseException) -> Callable[[], object]:
    """A function that re-raises `exc`: how a failure is replayed through pybreaker."""

    def replay() -> object:
        raise exc

    return replay


__all__ = ["AsyncCircuitBreaker", "BreakerOpen", "CLOSED", "OPEN", "HALF_OPEN"]
