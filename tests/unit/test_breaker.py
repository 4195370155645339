"""The asyncio adapter over pybreaker's state machine."""

from __future__ import annotations

import asyncio

import pytest

from meshsearch_common.breaker import CLOSED, HALF_OPEN, OPEN, AsyncCircuitBreaker, BreakerOpen
from tests.clock import FakeClock


class UpstreamDown(Exception):
    pass


class CallerMistake(Exception):
    pass


def make_breaker(reset_timeout_s: float = 0.2, clock: FakeClock | None = None) -> AsyncCircuitBreaker:
    return AsyncCircuitBreaker(
        "upstream",
        fail_max=3,
        reset_timeout_s=reset_timeout_s,
        is_failure=lambda exc: not isinstance(exc, CallerMistake),
        clock=clock or FakeClock(),
    )


class Upstream:
    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        if self.error:
            raise self.error
        return "ok"


async def held_trial(breaker: AsyncCircuitBreaker) -> tuple[asyncio.Task[str], asyncio.Event]:
    """Start a call that answers "ok" only once the returned event is set."""
    release = asyncio.Event()

    async def slow_trial() -> str:
        await release.wait()
        return "ok"

    trial = asyncio.create_task(breaker.call(slow_trial))
    await asyncio.sleep(0)  # one turn of the loop: the call is admitted and waits on `release`
    return trial, release


async def fail_times(breaker: AsyncCircuitBreaker, upstream: Upstream, times: int) -> None:
    for _ in range(times):
        with pytest.raises(UpstreamDown):
            await breaker.call(upstream)


async def due_for_trial(reset_timeout_s: float = 0.2) -> tuple[AsyncCircuitBreaker, Upstream]:
    """A breaker that three failures opened, its reset timeout passed on its clock: the next
    call is the half-open trial. The upstream still fails until the test says otherwise."""
    clock = FakeClock()
    breaker, upstream = make_breaker(reset_timeout_s, clock), Upstream()
    upstream.error = UpstreamDown()
    await fail_times(breaker, upstream, 3)
    clock.advance(reset_timeout_s + 0.01)
    return breaker, upstream


async def test_breaker_opens_after_fail_max_consecutive_failures() -> None:
    breaker, upstream = make_breaker(), Upstream()
    upstream.error = UpstreamDown()
    await fail_times(breaker, upstream, 2)
    assert breaker.state == CLOSED
    await fail_times(breaker, upstream, 1)
    assert breaker.state == OPEN


async def test_open_breaker_fails_fast_without_calling_upstream() -> None:
    breaker, upstream = make_breaker(reset_timeout_s=30), Upstream()
    upstream.error = UpstreamDown()
    await fail_times(breaker, upstream, 3)
    calls_before = upstream.calls
    with pytest.raises(BreakerOpen, match="upstream 'upstream' is open"):
        await breaker.call(upstream)
    assert upstream.calls == calls_before


async def test_half_open_trial_success_closes_the_breaker() -> None:
    breaker, upstream = await due_for_trial()
    upstream.error = None
    assert await breaker.call(upstream) == "ok"
    assert breaker.state == CLOSED


async def test_half_open_trial_failure_reopens_the_breaker() -> None:
    breaker, upstream = await due_for_trial()
    await fail_times(breaker, upstream, 1)
    assert breaker.state == OPEN
    with pytest.raises(BreakerOpen):
        await breaker.call(upstream)


async def test_half_open_admits_only_one_trial_at_a_time() -> None:
    breaker, upstream = await due_for_trial()
    upstream.error = None
    trial, release = await held_trial(breaker)
    assert breaker.state == HALF_OPEN
    with pytest.raises(BreakerOpen):
        await breaker.call(upstream)
    release.set()
    assert await trial == "ok"
    assert breaker.state == CLOSED


async def test_caller_errors_never_open_the_breaker() -> None:
    breaker, upstream = make_breaker(), Upstream()
    upstream.error = CallerMistake()
    for _ in range(10):
        with pytest.raises(CallerMistake):
            await breaker.call(upstream)
    assert breaker.state == CLOSED


async def test_success_resets_the_consecutive_failure_count() -> None:
    breaker, upstream = make_breaker(), Upstream()
    upstream.error = UpstreamDown()
    await fail_times(breaker, upstream, 2)
    upstream.error = None
    await breaker.call(upstream)
    upstream.error = UpstreamDown()
    await fail_times(breaker, upstream, 2)
    assert breaker.state == CLOSED


async def cancelled_call(breaker: AsyncCircuitBreaker) -> None:
    """A call our own caller gives up on while the upstream has not answered."""
    never = asyncio.Event()

    async def hangs() -> str:
        await never.wait()
        return "never"

    task = asyncio.create_task(breaker.call(hangs))
    await asyncio.sleep(0)  # one turn of the loop: the call is admitted and waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancelled_call_is_neither_a_success_nor_a_failure() -> None:
    breaker, upstream = make_breaker(), Upstream()
    upstream.error = UpstreamDown()
    await fail_times(breaker, upstream, 2)
    await cancelled_call(breaker)  # as a success it would reset the count and hide a hung upstream
    await fail_times(breaker, upstream, 1)
    assert breaker.state == OPEN


async def test_a_cancelled_trial_lets_the_next_call_be_the_trial() -> None:
    breaker, upstream = await due_for_trial()
    await cancelled_call(breaker)
    assert breaker.state == HALF_OPEN
    upstream.error = None
    assert await breaker.call(upstream) == "ok"
    assert breaker.state == CLOSED


async def test_a_call_may_judge_its_own_failures() -> None:
    breaker, upstream = make_breaker(), Upstream()
    upstream.error = UpstreamDown()
    for _ in range(5):
        with pytest.raises(UpstreamDown):
            await breaker.call(upstream, is_failure=lambda exc: False)
    assert breaker.state == CLOSED


async def test_a_caller_can_ask_whether_a_call_would_be_rejected_without_taking_the_trial() -> None:
    clock = FakeClock()
    breaker, upstream = make_breaker(reset_timeout_s=0.2, clock=clock), Upstream()
    assert breaker.rejecting_for_s() is None
    upstream.error = UpstreamDown()
    await fail_times(breaker, upstream, 3)
    waiting = breaker.rejecting_for_s()
    assert waiting == pytest.approx(0.2)  # the whole reset timeout: no time has passed on the clock
    clock.advance(0.25)
    assert breaker.rejecting_for_s() is None  # the next call would be the trial, and asking did not take it
    trial, release = await held_trial(breaker)
    assert breaker.rejecting_for_s() == 0.0  # the trial is in flight
    release.set()
    await trial
    assert breaker.rejecting_for_s() is None


async def test_only_one_asker_is_sent_towards_the_trial() -> None:
    breaker, upstream = await due_for_trial(reset_timeout_s=0.1)
    assert breaker.rejecting_for_s(claim=True) is None  # this caller goes ahead and makes the trial
    assert breaker.rejecting_for_s(claim=True) == 0.0  # everyone else fails fast meanwhile
    upstream.error = None
    assert await breaker.call(upstream) == "ok"
    assert breaker.rejecting_for_s(claim=True) is None
