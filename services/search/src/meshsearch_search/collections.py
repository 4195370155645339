"""CollectionStore: create, describe, list and drop collections.

Each collection is a row in meshsearch_collections plus its own table of points (typed with
the collection's dimension, so pgvector can index it), indexed by HNSW on the embedding for
the collection's metric and GIN (jsonb_path_ops) on metadata for filters, and the BM25
statistics of `keyword` for keyword and hybrid search.

Collection rows are cached for a few seconds, so a query costs one round trip for its SQL, not
two. A collection dropped or recreated by another replica is noticed within that time, or at
once when its table is gone (the points store invalidates and retries).
"""

from __future__ import annotations

import time
from dataclasses import replace

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from meshsearch_common import names
from meshsearch_common.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from meshsearch_search import keyword, shards
from meshsearch_search.db import Database
from meshsearch_search.domain import (
    HNSW_INDEX_SUFFIX,
    POINTS_TABLE_PREFIX,
    Collection,
    CollectionSpec,
    Metric,
    ModelIdentity,
    Storage,
)
from meshsearch_search.shards import Shards

# pgvector distance operator and operator-class suffix per metric.
METRIC_OPERATORS: dict[Metric, tuple[str, str]] = {
    Metric.COSINE: ("<=>", "cosine_ops"),
    Metric.DOT: ("<#>", "ip_ops"),
    Metric.L2: ("<->", "l2_ops"),
}
HNSW_MAX_DIMENSION = 2000  # pgvector: HNSW indexes `vector` columns of up to 2,000 dimensions
HALFVEC_HNSW_MAX_DIMENSION = 4000
CACHE_TTL_S = 2.0


def validate_name(name: str) -> None:
    """Accepts public names and the api's tenant-qualified ones (`tenant/name`, see
    meshsearch_common.names)."""
    if not names.STORED_COLLECTION_NAME.match(name):
        raise InvalidArgument(f"invalid collection name {name!r}: use {names.COLLECTION_NAME_RULE}")


def hnsw_index_sql(collection: Collection, concurrently: bool = False) -> sql.Composed:
    spec = collection.spec
    column = spec.storage.column_type
    _, ops_suffix = METRIC_OPERATORS[spec.metric]
    return sql.SQL(
        "CREATE INDEX {concurrently} IF NOT EXISTS {index} ON {table} USING hnsw (embedding {ops}) "
        "WITH (m = {m}, ef_construction = {ef})"
    ).format(
        concurrently=sql.SQL("CONCURRENTLY" if concurrently else ""),
        index=sql.Identifier(collection.hnsw_index),
        table=sql.Identifier(collection.table),
        ops=sql.SQL(f"{column}_{ops_suffix}"),
        m=sql.Literal(spec.hnsw_m),
        ef=sql.Literal(spec.hnsw_ef_construction),
    )


def collection_from_row(row: dict) -> Collection:  # type: ignore[type-arg]
    return Collection(
        id=row["id"],
        spec=CollectionSpec(
            name=row["name"],
            dimension=row["dimension"],
            metric=Metric(row["metric"]),
            storage=Storage(row["storage"]),
            hnsw_m=row["hnsw_m"],
            hnsw_ef_construction=row["hnsw_ef_construction"],
            model=ModelIdentity(
                id=row["model_id"],
                revision=row["model_revision"],
                dimension=row["model_dimension"],
                normalized=row["model_normalized"],
                numerics=row.get("model_numerics", ""),
            ),
            mixed_numerics=row.get("mixed_numerics", False),
            chunk_tokens=row.get("chunk_tokens", 0),
            chunk_overlap_tokens=row.get("chunk_overlap_tokens", 0),
            chunk_truncate=row.get("chunk_truncate", False),
            shards=row.get("shards", 0),
        ),
        create_time=row["create_time"],
        point_count=row.get("point_count", 0) or 0,
        index_ready=bool(row["index_ready"]),
        index_deferred=bool(row.get("index_deferred", False)),
    )


# The HNSW index is ready when it exists and is valid (not mid-build or left invalid by a crash);
# a sharded collection's are on its shards, built with their tables.
_SELECT = f"""
    SELECT c.*,
           c.shards > 1 OR EXISTS (SELECT 1 FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid
                    WHERE x.relname = '{POINTS_TABLE_PREFIX}' || c.id || '{HNSW_INDEX_SUFFIX}'
                      AND i.indisvalid) AS index_ready,
           coalesce(c.index_deferred_until > now(), false) AS index_deferred
      FROM meshsearch_collections c
"""


def points_table_sql(collection: Collection) -> list[sql.Composed]:
    """Statements that create a collection's points table and its indexes.

    A row is one chunk of a document: `id` is the document's id, `chunk` its position. Chunk 0
    holds the document's text (others hold none, so keyword statistics count each document
    once); every chunk carries the metadata, so filters select whole documents. A span is the
    chunk's characters in the text, NULL when the one chunk is the whole text."""
    table = sql.Identifier(collection.table)
    spec = collection.spec
    return [
        sql.SQL(
            """CREATE TABLE {table} (
                   id         text NOT NULL,
                   chunk      integer NOT NULL DEFAULT 0,
                   span_start integer,
                   span_end   integer,
                   embedding  {column}({dimension}) NOT NULL,
                   text       text NOT NULL DEFAULT '',
                   metadata   jsonb NOT NULL DEFAULT '{{}}',
                   tsv        tsvector GENERATED ALWAYS AS (to_tsvector({config}, text)) STORED,
                   updated_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (id, chunk)
               )"""
        ).format(
            table=table,
            column=sql.SQL(spec.storage.column_type),
            dimension=sql.Literal(spec.dimension),
            config=sql.Literal(keyword.TEXT_SEARCH_CONFIG),
        ),
        hnsw_index_sql(collection),
        sql.SQL("CREATE INDEX {} ON {} USING gin (metadata jsonb_path_ops)").format(
            sql.Identifier(f"{collection.table}_metadata"), table
        ),
        *keyword.install(collection),
    ]


async def _count_documents(conn: psycopg.AsyncConnection, collection: Collection) -> int:
    cursor = await conn.execute(keyword.document_count(collection))
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


class CollectionStore:
    def __init__(self, db: Database, max_dimension: int, shards: Shards | None = None) -> None:
        self._db = db
        self._max_dimension = max_dimension
        self.shards = shards or Shards([])
        self._cache: dict[str, tuple[float, Collection]] = {}

    def _validate(self, spec: CollectionSpec) -> None:
        validate_name(spec.name)
        limit = min(
            self._max_dimension,
            HALFVEC_HNSW_MAX_DIMENSION if spec.storage is Storage.FLOAT16 else HNSW_MAX_DIMENSION,
        )
        if not 1 <= spec.dimension <= limit:
            raise InvalidArgument(
                f"dimension {spec.dimension} is out of range: 1 to {limit} for {spec.storage.value} storage"
            )
        if not 2 <= spec.hnsw_m <= 100:
            raise InvalidArgument(f"hnsw m {spec.hnsw_m} is out of range: 2 to 100")
        if not 4 <= spec.hnsw_ef_construction <= 1000 or spec.hnsw_ef_construction < 2 * spec.hnsw_m:
            raise InvalidArgument(
                f"hnsw ef_construction {spec.hnsw_ef_construction} is out of range: 4 to 1000 and at least 2 * m"
            )
        if spec.model.dimension and spec.model.dimension != spec.dimension:
            raise InvalidArgument(
                f"model dimension {spec.model.dimension} differs from collection dimension {spec.dimension}"
            )
        self.shards.check(spec.shards)

    async def create(self, spec: CollectionSpec) -> Collection:
        self._validate(spec)
        async with self._db.transaction() as conn:
            try:
                cursor = await conn.execute(
                    """INSERT INTO meshsearch_collections (name, dimension, metric, storage, hnsw_m,
                           hnsw_ef_construction, model_id, model_revision, model_dimension, model_normalized,
                           chunk_tokens, chunk_overlap_tokens, chunk_truncate, model_numerics, mixed_numerics,
                           shards)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                       RETURNING id, create_time""",
                    (
                        spec.name,
                        spec.dimension,
                        spec.metric.value,
                        spec.storage.value,
                        spec.hnsw_m,
                        spec.hnsw_ef_construction,
                        spec.model.id,
                        spec.model.revision,
                        spec.model.dimension or spec.dimension,
                        spec.model.normalized,
                        spec.chunk_tokens,
                        spec.chunk_overlap_tokens,
                        spec.chunk_truncate,
                        spec.model.numerics,
                        spec.mixed_numerics,
                        spec.shards if spec.shards > 1 else 0,
                    ),
                )
            except psycopg.errors.UniqueViolation:
                raise AlreadyExists(f"collection '{spec.name}' already exists") from None
            row = await cursor.fetchone()
            assert row is not None
            collection = Collection(id=row[0], spec=spec, create_time=row[1])
            if collection.sharded:
                # The shards' tables first, within this transaction: should any shard fail, the
                # collection does not exist anywhere.
                await self.shards.create(collection, points_table_sql(collection))
                statements = shards.coordinator_tables_sql(collection, self.shards.ef_tiers.tiers)
            else:
                statements = points_table_sql(collection)
            for statement in statements:
                await conn.execute(statement)
        self._cache.pop(spec.name, None)
        return await self.get(spec.name)

    def invalidate(self, name: str) -> None:
        self._cache.pop(name, None)

    async def get(self, name: str, *, count: bool = True) -> Collection:
        """The collection; `count=False` may answer from the short-lived cache."""
        validate_name(name)
        if not count:
            cached = self._cache.get(name)
            if cached and time.monotonic() - cached[0] < CACHE_TTL_S:
                return cached[1]
        try:
            async with self._db.transaction() as conn:
                cursor = conn.cursor(row_factory=dict_row)
                await cursor.execute(_SELECT + " WHERE c.name = %s", (name,))
                row = await cursor.fetchone()
                if row is None:
                    self._cache.pop(name, None)
                    raise NotFound(f"collection '{name}' does not exist")
                collection = collection_from_row(row)
                if count:
                    collection = replace(collection, point_count=await _count_documents(conn, collection))
        except Unavailable as exc:  # a sharded collection's counters live on its shards: name the one
            raise self.shards.named(exc) from None
        self._cache[name] = (time.monotonic(), collection)
        return collection

    async def every(self) -> list[Collection]:
        """Every collection of every tenant, uncounted: the index keeper's sweep, not a caller's
        listing (callers see one tenant's through `list`)."""
        async with self._db.transaction() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(_SELECT + ' ORDER BY c.name COLLATE "C"')
            return [collection_from_row(row) for row in await cursor.fetchall()]

    async def list(self, tenant: str, after: str = "", limit: int = 0, counts: bool = True) -> list[Collection]:
        """`tenant`'s collections (bare names for the default tenant, ""), in byte order of
        name after `after`, at most `limit` (0: all); documents are counted only when `counts`,
        and only in the collections returned."""
        if tenant and not names.TENANT.match(tenant):
            raise InvalidArgument(f"invalid tenant {tenant!r}: use {names.TENANT_RULE}", field="tenant")
        if after and not names.STORED_COLLECTION_NAME.match(after):
            # Checked where it enters: a NUL or any other byte no name holds never reaches SQL.
            raise InvalidArgument(f"after must be a collection name: use {names.COLLECTION_NAME_RULE}", field="after")
        owned = "starts_with(c.name, %(prefix)s)" if tenant else "strpos(c.name, %(separator)s) = 0"
        query = (
            _SELECT + f' WHERE {owned} AND c.name COLLATE "C" > %(after)s '
            'ORDER BY c.name COLLATE "C"' + (" LIMIT %(limit)s" if limit else "")
        )
        arguments = {
            "prefix": f"{tenant}{names.TENANT_SEPARATOR}",
            "separator": names.TENANT_SEPARATOR,
            "after": after,
            "limit": limit,
        }
        try:
            async with self._db.transaction() as conn:
                cursor = conn.cursor(row_factory=dict_row)
                await cursor.execute(query, arguments)
                collections = [collection_from_row(row) for row in await cursor.fetchall()]
                if not counts:
                    return collections
                return [replace(c, point_count=await _count_documents(conn, c)) for c in collections]
        except Unavailable as exc:  # a sharded collection's count needs its shards: name the one down
            raise self.shards.named(exc) from None

    async def delete(self, name: str) -> None:
        validate_name(name)
        self._cache.pop(name, None)
        collection = await self.get(name, count=False)
        if collection.sharded:
            # Shards first: should one be down, the collection stays whole and a retry finishes.
            await self.shards.drop(collection)
        async with self._db.transaction() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "DELETE FROM meshsearch_collections c WHERE name = %s RETURNING c.*, true AS index_ready", (name,)
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"collection '{name}' does not exist")
            collection = collection_from_row(row)
            if collection.sharded:
                for statement in shards.coordinator_drop_sql(collection):
                    await conn.execute(statement)
            else:
                await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(collection.table)))
            for statement in keyword.uninstall(collection):
                await conn.execute(statement)
