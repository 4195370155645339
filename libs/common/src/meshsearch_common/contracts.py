"""What callers read from the contracts' own options rather than from hand-kept lists.

Pure: only the protobuf runtime, so that the public client can use it without the
service-to-service layer (breakers, metrics, tracing).
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor

_SAFE_TO_REPEAT = {descriptor_pb2.MethodOptions.IDEMPOTENT, descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS}


def idempotent_methods(service: ServiceDescriptor) -> list[str]:
    """Unary methods the contract marks `idempotency_level = IDEMPOTENT` or `NO_SIDE_EFFECTS`:
    a call of one may be sent again when its outcome is unknown."""
    return [
        method.name
        for method in service.methods
        if method.GetOptions().idempotency_level in _SAFE_TO_REPEAT
        and not method.client_streaming
        and not method.server_streaming
    ]
