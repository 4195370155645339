"""What one request message may make a server hold in memory.

- `RequestLimits`: each server's bytes per request message, by method (near the largest valid
  request of that method). The server's gRPC receive cap is the largest of them: gRPC refuses a
  bigger message from its length prefix (RESOURCE_EXHAUSTED), having read almost none of it. The
  common server interceptor checks each message against its method's limit before parsing it
  (INVALID_ARGUMENT, reason MESSAGE_TOO_LARGE), so an oversized Search is never parsed.
- `meshsearch_common.read_budget`: what all calls being read may hold together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshsearch_common.errors import InvalidArgument

# gRPC's own message-size cap on every channel (its default is 4 MiB); servers use RequestLimits.
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class RequestLimits:
    """Bytes one request message of a method may have: `per_method` by full method name
    (`/pkg.Service/Method`), `default_bytes` for every other method."""

    default_bytes: int = 1024 * 1024
    per_method: Mapping[str, int] = field(default_factory=dict)

    def limit(self, method: str) -> int:
        return self.per_method.get(method, self.default_bytes)

    @property
    def largest(self) -> int:
        """The server's gRPC receive cap: no method may receive more."""
        return max([self.default_bytes, *self.per_method.values()])


@dataclass(frozen=True)
class Oversized:
    """Stands for a request message that was not parsed because it is over its method's limit;
    the server interceptor turns it into INVALID_ARGUMENT before any handler sees it."""

    size: int
    limit: int

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"request message is {self.size} bytes, over this method's limit of {self.limit} bytes; "
            "send fewer or smaller items per message",
            reason="MESSAGE_TOO_LARGE",
        )


def bounded_deserializer(deserializer: Callable[[bytes], Any] | None, limit: int) -> Callable[[bytes], Any]:
    """`deserializer`, except that a message over `limit` bytes becomes an Oversized, unparsed."""

    def deserialize(raw: bytes) -> Any:
        if len(raw) > limit:
            return Oversized(len(raw), limit)
        return deserializer(raw) if deserializer is not None else raw

    return deserialize
