"""The search service's schema versions (applied by `meshsearch_common.migrations`: once, under
an advisory lock, append-only)."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from meshsearch_common import migrations
from meshsearch_search import keyword, receipts
from meshsearch_search.collections import collection_from_row

log = logging.getLogger(__name__)

# Arbitrary but fixed: identifies meshsearch's migration lock among other advisory locks.
_MIGRATION_LOCK_KEY = 0x6D657368


async def _chunks_and_bm25(conn: psycopg.AsyncConnection) -> None:
    """Version 2: documents stored as chunks (key (id, chunk), spans), and BM25 statistics in
    place of the tsvector GIN index. Existing points become single-chunk documents, and
    collections record their writer's chunking (0: the writer's defaults) and the numerics of
    their model (existing ones: not recorded, so any numerics of the model is accepted)."""
    await conn.execute(
        "ALTER TABLE meshsearch_collections ADD COLUMN chunk_tokens integer NOT NULL DEFAULT 0, "
        "ADD COLUMN chunk_overlap_tokens integer NOT NULL DEFAULT 0, "
        "ADD COLUMN chunk_truncate boolean NOT NULL DEFAULT false, "
        "ADD COLUMN model_numerics text NOT NULL DEFAULT '', ADD COLUMN mixed_numerics boolean NOT NULL DEFAULT false"
    )
    cursor = conn.cursor(row_factory=dict_row)
    await cursor.execute("SELECT c.*, true AS index_ready FROM meshsearch_collections c ORDER BY id")
    for row in await cursor.fetchall():
        collection = collection_from_row(row)
        table = sql.Identifier(collection.table)
        await conn.execute(
            sql.SQL(
                "ALTER TABLE {table} ADD COLUMN chunk integer NOT NULL DEFAULT 0, "
                "ADD COLUMN span_start integer, ADD COLUMN span_end integer"
            ).format(table=table)
        )
        await conn.execute(
            sql.SQL("ALTER TABLE {table} DROP CONSTRAINT {pkey}, ADD PRIMARY KEY (id, chunk)").format(
                table=table, pkey=sql.Identifier(f"{collection.table}_pkey")
            )
        )
        await conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(f"{collection.table}_tsv")))
        for statement in keyword.install(collection):
            await conn.execute(statement)


MIGRATIONS: list[tuple[int, migrations.Migration]] = [
    (
        1,
        """
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE meshsearch_collections (
            id                   bigserial PRIMARY KEY,
            name                 text NOT NULL UNIQUE,
            dimension            integer NOT NULL,
            metric               text NOT NULL,
            storage              text NOT NULL,
            hnsw_m               integer NOT NULL,
            hnsw_ef_construction integer NOT NULL,
            model_id             text NOT NULL DEFAULT '',
            model_revision       text NOT NULL DEFAULT '',
            model_dimension      integer NOT NULL DEFAULT 0,
            model_normalized     boolean NOT NULL DEFAULT false,
            create_time          timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (2, _chunks_and_bm25),
    (3, receipts.SCHEMA),
    # Version 4: a loading writer's lease on holding off the HNSW index (see index_keeper).
    (4, "ALTER TABLE meshsearch_collections ADD COLUMN index_deferred_until timestamptz"),
    # Version 5: the shard servers a collection's points are spread over (0: this database).
    (5, "ALTER TABLE meshsearch_collections ADD COLUMN shards integer NOT NULL DEFAULT 0"),
]


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Bring the schema to the newest version; return the version in force."""
    return await migrations.apply(conn, _MIGRATION_LOCK_KEY, "meshsearch_schema", MIGRATIONS)
