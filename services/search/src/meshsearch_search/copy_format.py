"""Vectors in pgvector's binary wire format, produced a whole batch at a time (bulk loads).

pgvector's own dumper converts one vector per call (a byteswap and a header per row); for a
bulk load that per-row Python work was a large share of the service's CPU. Here a batch of
vectors is validated and byteswapped in one numpy operation, and a pass-through dumper,
registered for the column's type oid, hands the bytes to COPY unchanged.

Format (pgvector vector_recv / halfvec_recv): uint16 dimension, uint16 zero, then the values
as big-endian float32 (`vector`) or float16 (`halfvec`).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from meshsearch_search.domain import Storage

_WIRE_DTYPES: dict[Storage, np.dtype[np.floating[Any]]] = {
    Storage.FLOAT32: np.dtype(">f4"),
    Storage.FLOAT16: np.dtype(">f2"),
}


def pack_vectors(rows: npt.NDArray[np.float32], storage: Storage) -> list[bytes]:
    """Each row of a (n, dimension) matrix in pgvector's binary format."""
    matrix = np.asarray(rows, dtype=_WIRE_DTYPES[storage])
    header = struct.pack(">HH", matrix.shape[1], 0)
    return [header + row.tobytes() for row in matrix]


def use_json_text(conn: psycopg.AsyncConnection) -> str:
    """Make COPY on `conn` send `str` values of jsonb columns as the JSON text they are (binary
    jsonb is a version byte and the text); PostgreSQL parses and validates them. Returns "jsonb"."""

    class JsonTextDumper(Dumper):
        format = Format.BINARY
        oid = conn.adapters.types["jsonb"].oid

        def dump(self, obj: str) -> bytes:
            return b"\x01" + obj.encode()

    conn.adapters.register_dumper(None, JsonTextDumper)
    return "jsonb"


def use_packed_vectors(conn: psycopg.AsyncConnection, storage: Storage) -> str:
    """Make COPY on `conn` pass bytes through unchanged for the storage's vector type; returns
    the type name to give `Copy.set_types`. Only COPY (which looks dumpers up by oid) is affected."""
    name = storage.column_type
    info = conn.adapters.types.get(name)
    if info is None:
        raise RuntimeError(f"pgvector type {name} is not registered on this connection")

    class PackedDumper(Dumper):
        format = Format.BINARY
        oid = info.oid  # type: ignore[union-attr]  # checked for None just above, outside this class

        def dump(self, obj: bytes) -> bytes:
            return obj

    conn.adapters.register_dumper(None, PackedDumper)
    return name
