"""The public Filter (meshsearch.api.v1) and the search service's (meshsearch.search.v1) are two
definitions of one wire format: the api forwards a caller's filter as its bytes, and the search
service reads them as its own message. These tests keep the two identical on the wire, so a
field added to one and not the other fails here, not in production."""

from __future__ import annotations

from typing import cast

from google.protobuf.descriptor import Descriptor
from google.protobuf.unknown_fields import UnknownFieldSet
from hypothesis import given, settings

from meshsearch.api.v1 import api_pb2
from meshsearch.search.v1 import search_pb2
from tests.fuzz.messages import messages

PUBLIC_FILTER = cast(Descriptor, api_pb2.Filter.DESCRIPTOR)
INTERNAL_FILTER = cast(Descriptor, search_pb2.Filter.DESCRIPTOR)


def wire_shape(descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> object:
    """What decides how a message's bytes are read: per field number, its name, wire type,
    repetition, oneof and (recursively, by shape, not by package) the nested message."""
    if descriptor.full_name in seen:
        return ("recursive", descriptor.name)
    inner = seen | {descriptor.full_name}
    shape = []
    for field in sorted(descriptor.fields, key=lambda f: f.number):
        nested = field.message_type
        shape.append(
            (
                field.number,
                field.name,
                field.type,
                field.is_repeated,
                field.has_presence,
                field.containing_oneof.name if field.containing_oneof else None,
                wire_shape(nested, inner)
                if nested is not None and nested.file.package.startswith("meshsearch")
                else (nested.full_name if nested is not None else None),
            )
        )
    return (descriptor.name, tuple(shape))


def test_the_public_and_internal_filters_have_one_wire_shape() -> None:
    assert wire_shape(PUBLIC_FILTER) == wire_shape(INTERNAL_FILTER)


@settings(max_examples=300, deadline=None, database=None)
@given(messages(PUBLIC_FILTER))
def test_a_public_filter_reads_as_the_same_internal_filter(public: api_pb2.Filter) -> None:
    internal = search_pb2.Filter.FromString(public.SerializeToString())
    assert internal.SerializeToString(deterministic=True) == public.SerializeToString(deterministic=True)
    assert len(UnknownFieldSet(internal)) == 0
