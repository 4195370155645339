"""Requests for any RPC, generated from the protos' own descriptors with hypothesis.

Nothing here knows a meshsearch message by name: every field is drawn from its descriptor's type,
so a field added to a proto is fuzzed without a change here. The values lean to the edges that
break servers in practice: empty and NUL-bearing strings, strings that look like the ids and page
tokens the mesh issues, integers at the limits of their wire type, NaN and infinities, vectors of
plausible and implausible sizes, unknown enum numbers, deep filter trees.

`names` lets a caller seed the strings with names that exist (a collection to play in), so that
requests reach past the first NOT_FOUND into the code behind it.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Literal

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

MAX_DEPTH = 4  # nesting of message fields (the Filter tree recurses)
MAX_REPEATED = 4
LONG_TEXT_CHARS = 70_000  # past every per-field limit the mesh documents, far under the message cap
# Fields that name a collection get one of `names` two times in three, so that most requests get
# past the first NOT_FOUND; every other field is drawn from the edges alone.
NAME_FIELDS = frozenset({"collection", "name"})

_INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOAT_EDGES = (0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324, 3.5e38)


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


def edge_strings(names: Sequence[str]) -> st.SearchStrategy[str]:
    """Strings a server must refuse or serve precisely, never crash on."""
    looks_issued = [
        "0" * 32,  # a job id's form
        "0123456789abcdef",  # a key id's form
        _token("\x00"),
        _token("a\x00b"),
        _token("2026-01-01T00:00:00+00:00|" + "0" * 32),
        _token("not-a-date|\x00"),
        _token("9" * 40),
        "%%%not base64",
        "====",
    ]
    fixed = ["", " ", "0", "1", "\x00", "a\x00b", "é☃𝄞", "a/b", "../x", "UPPER", "x" * 300, *looks_issued, *names]
    return st.one_of(
        st.sampled_from(fixed),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
        st.just("w " * (LONG_TEXT_CHARS // 2)),
    )


def edge_ints(kind: int) -> st.SearchStrategy[int]:
    low, high = _INT_BOUNDS[kind]
    edges = sorted({v for v in (0, 1, -1, 2, 8, 384, 1000, 1001, 2**31 - 1, 2**32 - 1, low, high) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(low, high), st.integers(max(low, -3), min(high, 20)))


def edge_floats(single: bool) -> st.SearchStrategy[float]:
    width: Literal[32, 64] = 32 if single else 64
    edges = [v for v in _FLOAT_EDGES if not (single and abs(v) == 1e308)]
    return st.one_of(st.sampled_from(edges), st.floats(width=width), st.floats(-2, 2, width=width))


def edge_bytes() -> st.SearchStrategy[bytes]:
    """Raw bytes, and float32 vectors of sizes a vector field may or may not accept."""
    vector = st.sampled_from([1, 3, 8, 384, 385]).flatmap(
        lambda n: st.lists(st.floats(-1, 1, width=32), min_size=n, max_size=n).map(
            lambda values: struct.pack(f"<{len(values)}f", *values)
        )
    )
    return st.one_of(st.just(b""), st.binary(max_size=64), vector, st.just(b"\xff" * 7))


def _scalar(field: FieldDescriptor, names: Sequence[str]) -> st.SearchStrategy[object]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        if names and field.name in NAME_FIELDS:
            return st.one_of(st.sampled_from(names), st.sampled_from(names), edge_strings(names))
        return edge_strings(names)
    if kind == FieldDescriptor.TYPE_BYTES:
        return edge_bytes()
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return edge_floats(kind == FieldDescriptor.TYPE_FLOAT)
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.sampled_from([max(known) + 1, -1, 2**31 - 1]))
    return edge_ints(kind)


def messages(descriptor: Descriptor, names: Sequence[str] = (), depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`'s type, each field set or left unset by the draw."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth >= MAX_DEPTH:
        return st.builds(cls)
    return st.fixed_dictionaries(
        {}, optional={field.name: _field_values(field, names, depth) for field in descriptor.fields}
    ).map(lambda values: _build(cls, descriptor, values))


def _field_values(field: FieldDescriptor, names: Sequence[str], depth: int) -> st.SearchStrategy[object]:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key_field, value_field = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return st.dictionaries(_scalar(key_field, names), _single(value_field, names, depth + 1), max_size=MAX_REPEATED)
    single = _single(field, names, depth + 1)
    if field.is_repeated:
        return st.lists(single, max_size=MAX_REPEATED)
    return single


def _single(field: FieldDescriptor, names: Sequence[str], depth: int) -> st.SearchStrategy[object]:
    nested = field.message_type
    if nested is not None:
        return st.deferred(lambda: messages(nested, names, depth))
    return _scalar(field, names)


def _build(cls: type[Message], descriptor: Descriptor, values: dict[str, object]) -> Message:
    message = cls()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name) if field.is_repeated else None
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, Message):
                    target[key].CopyFrom(item)  # type: ignore[index]
                else:
                    target[key] = item  # type: ignore[index]
        elif isinstance(value, list):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)  # type: ignore[union-attr]
            else:
                target.extend(value)  # type: ignore[union-attr]
        elif isinstance(value, Message):
            getattr(message, name).CopyFrom(value)
        else:
            setattr(message, name, value)
    return message
