"""Request-size guardrail shared by every adapter."""

from __future__ import annotations

from google.protobuf.message import Message

from meshsearch_common.errors import InvalidArgument


def check_message_size(message: Message, limit_bytes: int, what: str = "request") -> None:
    """INVALID_ARGUMENT naming the limit when `message` serializes to more than `limit_bytes`.

    gRPC's own transport cap (64 MiB here) answers RESOURCE_EXHAUSTED; this documented,
    lower limit gives callers a precise, actionable error well before that.
    """
    size = message.ByteSize()
    if size > limit_bytes:
        raise InvalidArgument(f"{what} is {size} bytes, over the limit of {limit_bytes} bytes; split it")
