"""Per-request context that must follow a request across awaits and service hops.

The server interceptor fills these variables for each inbound RPC; the logging filter and
the client layer read them, so a request id and the caller's deadline reach every log line
and every upstream call without being threaded through function arguments.
"""

from __future__ import annotations

import contextvars
import time
import uuid

REQUEST_ID_METADATA_KEY = "x-request-id"

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# Absolute deadline of the inbound call on the time.monotonic() clock, or None for no deadline.
deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)


def new_request_id() -> str:
    """A fresh random id (32 hex characters)."""
    return uuid.uuid4().hex


def remaining_seconds() -> float | None:
    """Seconds left before the inbound call's deadline, or None when it has none."""
    end = deadline.get()
    return None if end is None else end - time.monotonic()
