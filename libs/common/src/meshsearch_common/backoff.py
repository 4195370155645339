"""Exponential backoff: how long to wait before the next attempt of something that failed.

One definition for every retry loop of the mesh (client retries, ingest batch retries, upload
reconnects, the supervisor's restarts, the CLI's watchers), so that each differs only in its
constants and its jitter, named as in the literature (Brooker, "Exponential Backoff And
Jitter", AWS Architecture Blog, 2015):
- "full": uniform over [0, ceiling]; spreads many callers the most (retries of a shared upstream);
- "equal": uniform over [ceiling / 2, ceiling]; never retries almost at once;
- "none": the ceiling itself; for one process waiting on its own (a supervisor restarting a child).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Jitter = Literal["full", "equal", "none"]


@dataclass(frozen=True)
class Backoff:
    """A ceiling that starts at `initial_s` for attempt 1 and doubles per attempt up to `max_s`."""

    initial_s: float
    max_s: float
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("need 0 < initial_s <= max_s")
        if self.jitter not in ("full", "equal", "none"):
            raise ValueError(f"jitter {self.jitter!r} is not full, equal or none")

    def ceiling_s(self, attempt: int) -> float:
        """The longest wait after the `attempt`-th failure (1 for the first; less counts as 1)."""
        doublings = min(max(0, attempt - 1), 64)  # past 64 the cap has long applied
        return min(self.max_s, self.initial_s * 2.0**doublings)

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after the `attempt`-th failure, drawn by the jitter (random unless `rng`)."""
        ceiling = self.ceiling_s(attempt)
        draw = (rng or random).uniform
        if self.jitter == "full":
            return draw(0.0, ceiling)
        if self.jitter == "equal":
            return draw(ceiling / 2, ceiling)
        return ceiling
