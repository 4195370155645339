"""Structured JSON logs, one object per line, carrying the current request id.

Records are handed to a queue on the calling thread and formatted and written by a background
thread (logging.handlers.QueueListener): writing to stderr is blocking I/O and must not run on
an event loop (measured: about 0.1 ms per access-log line). The request id lives in a context
variable the listener thread cannot see, so it is stamped on each record when it is emitted.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import queue
import sys
from datetime import UTC, datetime

from meshsearch_common import context

# Attributes every LogRecord has; anything else was passed through `extra=` and is emitted.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with timestamp, level, service, logger, request_id and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or context.request_id.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StampRequestId(logging.Filter):
    """Copies the current request id onto the record while still on the emitting thread."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = context.request_id.get()
            if request_id:
                record.request_id = request_id
        return True


_listener: logging.handlers.QueueListener | None = None


def configure_logging(service: str, level: str = "info") -> None:
    """Route all logging to stderr as JSON lines, written off the calling thread.
    Safe to call more than once."""
    global _listener
    if _listener is not None:
        _listener.stop()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter(service))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    enqueue = logging.handlers.QueueHandler(records)
    enqueue.addFilter(_StampRequestId())
    _listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    _listener.start()
    atexit.register(_listener.stop)  # flush what is queued when the process exits
    root = logging.getLogger()
    root.handlers[:] = [enqueue]
    root.setLevel(level.upper())
