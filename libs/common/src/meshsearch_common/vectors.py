"""Packing of vectors as little-endian float32 bytes, the wire format of every contract."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from meshsearch_common.errors import InvalidArgument

_WIRE_DTYPE = np.dtype("<f4")


def pack(matrix: npt.NDArray[np.floating]) -> bytes:
    """Serialize a 1-D vector or a 2-D row-major matrix as little-endian float32."""
    return np.ascontiguousarray(matrix, dtype=_WIRE_DTYPE).tobytes()


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
    matrix = np.frombuffer(data, dtype=_WIRE_DTYPE).reshape(-1, dimension).astype(np.float32, copy=False)
    if not np.isfinite(matrix).all():
        raise InvalidArgument("vector contains NaN or infinite values")
    return matrix
