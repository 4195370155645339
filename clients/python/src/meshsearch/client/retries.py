"""When a failed call is worth another attempt, and after how long.

One decision serves the sync and the async client alike:
- RESOURCE_EXHAUSTED carrying a google.rpc.RetryInfo is a refusal (a rate limit, a busy
  embedder or connection pool): nothing was done, so any method may try again, after the delay
  the server asked for, spread a little so callers refused together do not return together;
- UNAVAILABLE is retried only for methods the contract marks idempotent (`option
  idempotency_level`): the call may have been applied before the connection broke. Backoff is
  exponential with full jitter, and never shorter than a RetryInfo the server sent;
- everything else (a bad request, a missing collection, a key without rights) is final.
A wait longer than `max_wait_s` (a daily quota asks to come back after midnight) or past the
call's deadline is not waited for: the caller gets the error at once and can decide.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from meshsearch_common.backoff import Backoff


@dataclass(frozen=True)
class RetryPolicy:
    """How persistently a client retries. `max_attempts=1` turns retries off."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not 0 < self.initial_backoff_s <= self.max_backoff_s:
            raise ValueError("need 0 < initial_backoff_s <= max_backoff_s")


NO_RETRIES = RetryPolicy(max_attempts=1)


def delay_before_retry(
    policy: RetryPolicy,
    attempts_made: int,
    code: grpc.StatusCode,
    retry_after_s: float | None,
    idempotent: bool,
    time_left_s: float | None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds to wait before attempt `attempts_made + 1`, or None when the error is final."""
    if attempts_made >= policy.max_attempts:
        return None
    draw = (rng or random).uniform
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after_s is not None:
        delay = retry_after_s * draw(1.0, 1.2)
    elif code == grpc.StatusCode.UNAVAILABLE and idempotent:
        backoff = Backoff(policy.initial_backoff_s, policy.max_backoff_s, "full")
        delay = max(retry_after_s or 0.0, backoff.delay_s(attempts_made, rng))
    else:
        return None
    if delay > policy.max_wait_s or (time_left_s is not None and delay >= time_left_s):
        return None
    return delay
