"""Deadline budgets: how long each call may take, inbound and upstream.

The rules (also in docs/architecture.md, "Deadline budgets"):

1. An inbound unary call that arrives without a deadline gets one from its method class:
   reads (methods the contract marks `idempotency_level = NO_SIDE_EFFECTS`) get
   `READ_DEADLINE_S`, everything else `WRITE_DEADLINE_S`. So every unit of work is bounded,
   and so is every upstream call made for it. Streams get none: they are long-lived by design.
2. An upstream call made while serving an inbound call gets the inbound call's remaining time
   less a reserve: `deadline_reserve_s`, but never more than a quarter of what remains. An
   upstream that does not answer in time therefore fails at *our* side first, where it counts
   against that upstream's breaker, and our caller still gets a precise status in time.
3. An upstream call made outside any inbound call (start-up, background work) gets the
   policy's `timeout_s`.
4. A call with no time left is not sent: it fails at once with DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import functools
import time

from google.protobuf import descriptor_pb2, descriptor_pool

from meshsearch_common import context
from meshsearch_common.settings import UpstreamPolicy

# The reserve never takes more than this share of the remaining time, so short deadlines still
# leave the upstream most of the budget.
MAX_RESERVE_SHARE = 0.25


@functools.cache
def is_read_method(full_method: str) -> bool:
    """Whether `/package.Service/Method` is marked NO_SIDE_EFFECTS in its contract."""
    service_name, _, method_name = full_method.lstrip("/").rpartition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return False
    method = service.methods_by_name.get(method_name)
    if method is None:
        return False
    return method.GetOptions().idempotency_level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS


def inbound_deadline(
    full_method: str, caller_remaining_s: float | None, read_deadline_s: float, write_deadline_s: float
) -> float:
    """The absolute deadline (time.monotonic clock) of an inbound unary call (rule 1)."""
    if caller_remaining_s is not None:
        return time.monotonic() + caller_remaining_s
    default = read_deadline_s if is_read_method(full_method) else write_deadline_s
    return time.monotonic() + default


def reserve_for(remaining_s: float, policy: UpstreamPolicy) -> float:
    """Seconds kept back from `remaining_s` for answering the caller (rule 2)."""
    return min(policy.deadline_reserve_s, MAX_RESERVE_SHARE * max(remaining_s, 0.0))


def upstream_timeout(policy: UpstreamPolicy, requested_s: float | None = None) -> float | None:
    """Seconds an upstream call may take (rules 2-3), also bounded by an explicit `requested_s`.

    Returns None when the inbound call's time is already used up (rule 4: do not send).
    """
    remaining = context.remaining_seconds()
    if remaining is None:
        budget = policy.timeout_s
    else:
        budget = remaining - reserve_for(remaining, policy)
    if requested_s is not None:
        budget = min(budget, requested_s)
    return budget if budget > 0 else None
