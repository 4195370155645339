"""JSON values carried in protobuf Struct and Value fields (metadata, filter operands).

A Struct can hold what JSON cannot: NaN and the infinities. protobuf's own conversion refuses
them with a ValueError, which would surface as INTERNAL; this is the one place that conversion
happens, so each such value becomes INVALID_ARGUMENT naming its field.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from meshsearch_common.errors import InvalidArgument


def python_value(message: Message, field: str) -> Any:
    """The Python value (dict, list, str, float, bool, None) of a Struct, Value or ListValue."""
    try:
        return json_format.MessageToDict(message)
    except ValueError:
        raise InvalidArgument(f"{field} must hold JSON values only: no NaN or infinite numbers", field=field) from None


def struct_of(values: dict[str, Any]) -> struct_pb2.Struct:
    """`values` (JSON-compatible) as a protobuf Struct, as metadata travels in every contract."""
    message = struct_pb2.Struct()
    message.update(values)
    return message
