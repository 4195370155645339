"""Call any method of a gRPC service by its descriptor, and tally how the calls end.

Used by the fuzz test: a generated request goes to its method whatever its streaming shape, and
every status that should never reach a caller (UNKNOWN, INTERNAL) is kept with the request that
caused it, so one run reports every defect it found, not just the first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

# What a generated request may never end with: a bug in the server, not a refusal.
DEFECT_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})
MAX_RESPONSES_READ = 3  # of a server stream (WatchJob follows a job until it ends)


def methods(*services: ServiceDescriptor) -> list[MethodDescriptor]:
    return [method for service in services for method in service.methods]


def path_of(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def call(channel: grpc.Channel, method: MethodDescriptor, requests: list[Message], timeout_s: float) -> grpc.StatusCode:
    """Send `requests` (one unless the method streams its requests) and read what comes back;
    the status code the call ended with."""
    response_type = message_factory.GetMessageClass(method.output_type)
    shape = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }[(method.client_streaming, method.server_streaming)]
    multicallable: Any = shape(
        path_of(method), request_serializer=_serialize, response_deserializer=response_type.FromString
    )
    argument: Message | Iterator[Message] = iter(requests) if method.client_streaming else requests[0]
    try:
        answer = multicallable(argument, timeout=timeout_s)
        if method.server_streaming:
            list(islice(answer, MAX_RESPONSES_READ))
            answer.cancel()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


@dataclass
class Tally:
    """How every call ended, by method, and the defects with the request that caused each."""

    codes: Counter[tuple[str, str]] = field(default_factory=Counter)
    defects: list[str] = field(default_factory=list)

    def record(self, method: MethodDescriptor, requests: list[Message], code: grpc.StatusCode) -> None:
        self.codes[(method.name, code.name)] += 1
        if code in DEFECT_CODES:
            shown = " | ".join(" ".join(line[:120] for line in str(r).splitlines()) for r in requests)
            self.defects.append(f"{path_of(method)} -> {code.name}: {shown}")

    def summary(self) -> str:
        lines = [f"{name}: {code} x{count}" for (name, code), count in sorted(self.codes.items())]
        return "\n".join(lines)
