"""What the client adds to every call, shared by the sync and the async interceptors:
- the API key, as `authorization: Bearer <key>`;
- an `x-request-id`, fresh per logical call and the same on each of its retries, so the
  servers' logs show one request however many attempts it took;
- a default deadline for unary calls that set none (streams get none: a WatchJob may last
  hours), which also bounds the retries of the call;
- the retry decision (`retries`)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc

from meshsearch.client.contract import idempotent_paths
from meshsearch.client.retries import RetryPolicy, delay_before_retry
from meshsearch_common.context import REQUEST_ID_METADATA_KEY, new_request_id
from meshsearch_common.errors import FailedCall, retry_after_of

AUTHORIZATION_KEY = "authorization"
Metadata = list[tuple[str, str | bytes]]


@dataclass(frozen=True)
class CallPolicy:
    api_key: str = ""
    timeout_s: float | None = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    idempotent: frozenset[str] = field(default_factory=idempotent_paths)

    def metadata(self, given: Iterable[tuple[str, str | bytes]] | None) -> Metadata:
        """`given` plus the key and a request id, unless the caller set its own."""
        metadata = list(given or ())
        names = {key for key, _ in metadata}
        if self.api_key and AUTHORIZATION_KEY not in names:
            metadata.append((AUTHORIZATION_KEY, f"Bearer {self.api_key}"))
        if REQUEST_ID_METADATA_KEY not in names:
            metadata.append((REQUEST_ID_METADATA_KEY, new_request_id()))
        return metadata

    def deadline(self, timeout_s: float | None) -> float | None:
        """The monotonic time by which a unary call and all its retries must end."""
        budget = self.timeout_s if timeout_s is None else timeout_s
        return None if budget is None else time.monotonic() + budget

    def retry_delay(
        self, method: str | bytes, error: FailedCall, attempts_made: int, deadline: float | None
    ) -> float | None:
        """Seconds to wait before trying `method` again after `error`, or None to give up."""
        path = method.decode() if isinstance(method, bytes) else method
        time_left = None if deadline is None else deadline - time.monotonic()
        return delay_before_retry(
            self.retry, attempts_made, error.code(), retry_after_of(error), path in self.idempotent, time_left
        )


def time_left(deadline: float | None) -> float | None:
    """Seconds until `deadline` (never negative), or None without one."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def is_status_error(error: BaseException) -> bool:
    return isinstance(error, grpc.RpcError) and hasattr(error, "code")
