"""Upsert receipts: a writer's proof that one of its writes committed.

A background writer (the ingest worker) names each batch it writes with a receipt. The receipt
is inserted in the transaction that writes the batch's points, so it exists exactly when they
do. A writer that crashed between writing and recording its own progress asks for its receipts
instead of embedding the batch again, and a retried Upsert with a recorded receipt is a no-op.
"""

from __future__ import annotations

import re

import psycopg

from meshsearch_common.errors import InvalidArgument
from meshsearch_search.domain import Collection

RECEIPT_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces

SCHEMA = """
CREATE TABLE meshsearch_receipts (
    collection_id bigint NOT NULL REFERENCES meshsearch_collections (id) ON DELETE CASCADE,
    receipt       text NOT NULL,
    points        integer NOT NULL,
    create_time   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (collection_id, receipt)
);
"""


def check_receipt(receipt: str, field: str = "receipt") -> None:
    """A receipt, or a prefix of receipts, has their one form."""
    if not RECEIPT_PATTERN.match(receipt):
        raise InvalidArgument(f"{field} must be 1 to 200 printable ASCII characters without spaces", field=field)


async def record(conn: psycopg.AsyncConnection, collection: Collection, receipt: str, points: int) -> bool:
    """Record `receipt` in the caller's transaction; False when it was recorded before (a
    concurrent writer of the same receipt waits here for the first one's commit)."""
    cursor = await conn.execute(
        "INSERT INTO meshsearch_receipts (collection_id, receipt, points) VALUES (%s, %s, %s) "
        "ON CONFLICT DO NOTHING RETURNING 1",
        (collection.id, receipt, points),
    )
    return await cursor.fetchone() is not None


async def recorded(conn: psycopg.AsyncConnection, collection: Collection, receipts: list[str]) -> set[str]:
    cursor = await conn.execute(
        "SELECT receipt FROM meshsearch_receipts WHERE collection_id = %s AND receipt = ANY(%s)",
        (collection.id, receipts),
    )
    return {row[0] for row in await cursor.fetchall()}


async def forget(conn: psycopg.AsyncConnection, collection: Collection, prefix: str) -> int:
    cursor = await conn.execute(
        "DELETE FROM meshsearch_receipts WHERE collection_id = %s AND starts_with(receipt, %s)",
        (collection.id, prefix),
    )
    return cursor.rowcount
