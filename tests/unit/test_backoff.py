"""The one backoff every retry loop of the mesh uses."""

from __future__ import annotations

import random

import pytest

from meshsearch_common.backoff import Backoff, Jitter


def test_the_ceiling_doubles_per_attempt_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=3.0, jitter="none")
    assert [backoff.delay_s(n) for n in range(0, 6)] == [0.5, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.ceiling_s(10_000) == 3.0  # no overflow however long the run of failures


@pytest.mark.parametrize(("jitter", "low_share"), [("full", 0.0), ("equal", 0.5)])
def test_jitter_spreads_waits_over_its_documented_range(jitter: Jitter, low_share: float) -> None:
    backoff = Backoff(initial_s=1.0, max_s=8.0, jitter=jitter)
    rng = random.Random(7)
    waits = [backoff.delay_s(3, rng) for _ in range(2_000)]
    assert all(4.0 * low_share <= wait <= 4.0 for wait in waits)
    # Spread over the range, not bunched at one end.
    assert min(waits) < 4.0 * low_share + 0.1 and max(waits) > 3.9


def test_a_backoff_that_cannot_wait_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0, max_s=1)
    with pytest.raises(ValueError):
        Backoff(initial_s=2, max_s=1)
