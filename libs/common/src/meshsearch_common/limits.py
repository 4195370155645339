"""Message-size limits shared by every adapter and channel."""

from __future__ import annotations

from google.protobuf.message import Message

from meshsearch_common.errors import InvalidArgument

# gRPC's own message-size cap on every channel and server of the mesh (its default is 4 MiB).
GRPC_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def check_message_size(message: Message, limit_bytes: int, what: str = "request") -> None:
    """INVALID_ARGUMENT naming the limit when `message` serializes to more than `limit_bytes`.

    gRPC's own transport cap (GRPC_MAX_MESSAGE_BYTES) answers RESOURCE_EXHAUSTED; this documented,
    lower limit gives callers a precise, actionable error well before that.
    """
    size = message.ByteSize()
    if size > limit_bytes:
        raise InvalidArgument(f"{what} is {size} bytes, over the limit of {limit_bytes} bytes; split it")
