"""Vectors on the wire: packing as little-endian float32 bytes, and the similarity metric, as
every contract spells them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from meshsearch_common.errors import InvalidArgument, enum_member


class Metric(enum.Enum):
    """How vectors are compared. Every contract has an enum `Metric` with values `METRIC_<NAME>`
    (and 0 = `METRIC_UNSPECIFIED`, meaning cosine); the two functions below serve them all."""

    COSINE = "cosine"
    DOT = "dot"
    L2 = "l2"


@dataclass(frozen=True)
class ModelIdentity:
    """The model (revision and numerics) that produced a vector. Vectors are comparable only
    within one model and revision, and equal only within one numerics, so the identity travels
    with every embedding, write and query between services."""

    id: str = ""
    revision: str = ""
    dimension: int = 0
    normalized: bool = False
    numerics: str = ""  # engine and precision, e.g. "torch-float32": vectors differ slightly between them


class WireEnum(Protocol):
    """A generated protobuf enum type (its `Name` and `Value` lookups)."""

    def Name(self, number: int) -> str: ...  # noqa: N802 - protobuf's spelling
    def Value(self, name: str) -> int: ...  # noqa: N802
    def values(self) -> list[int]: ...


def metric_from_wire(wire: WireEnum, number: int, field: str) -> Metric:
    """A contract's Metric value as a Metric; unspecified means cosine; INVALID_ARGUMENT for a
    number this contract does not know."""
    mapping = {value: Metric[wire.Name(value).removeprefix("METRIC_")] for value in wire.values() if value}
    mapping[0] = Metric.COSINE
    return enum_member(mapping, number, field)


def metric_to_wire(wire: WireEnum, metric: Metric) -> str:
    """`metric` as the contract's enum label, which message constructors take as the value."""
    label = f"METRIC_{metric.name}"
    wire.Value(label)  # KeyError if this contract lacks it
    return label


_WIRE_DTYPE = np.dtype("<f4")


def pack(matrix: npt.NDArray[np.floating]) -> bytes:
    """Serialize a 1-D vector or a 2-D row-major matrix as little-endian float32."""
    return np.ascontiguousarray(matrix, dtype=_WIRE_DTYPE).tobytes()


def view(data: bytes, dimension: int) -> npt.NDArray[np.float32]:
    """Packed float32 bytes as a (rows, dimension) matrix, without copying or checking: for
    callers that validate length and values themselves (bulk loads name the bad point)."""
    return np.frombuffer(data, dtype=_WIRE_DTYPE).reshape(-1, dimension).astype(np.float32, copy=False)


def unpack(data: bytes, dimension: int) -> npt.NDArray[np.float32]:
    """Parse packed float32 bytes into a (rows, dimension) matrix.

    Raises InvalidArgument when the byte length does not match the declared dimension or the
    values are not finite, because such a vector would be stored or compared wrongly.
    """
    if dimension <= 0:
        raise InvalidArgument("vector dimension must be positive")
    if len(data) == 0 or len(data) % (4 * dimension) != 0:
        raise InvalidArgument(
            f"vector data has {len(data)} bytes, not a positive multiple of 4 * dimension "
            f"({4 * dimension}); send little-endian float32 values"
        )
    # A read-only view of the message's bytes: no copy (little-endian float32 is numpy's float32 here).
    matrix = view(data, dimension)
    if not np.isfinite(matrix).all():
        raise InvalidArgument("vector contains NaN or infinite values")
    return matrix
