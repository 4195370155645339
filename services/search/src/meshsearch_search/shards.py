"""Shards: the PostgreSQL servers a sharded collection's points are spread over.

PostgreSQL does the sharding (measured in docs/scaling.md). On the coordinator, this service's
own database, a sharded collection's table is partitioned by a hash of the document id, and
partition i is a postgres_fdw foreign table on shard server i, where the points really live:
in a table of the same name, with its own HNSW index and BM25 statistics, made by the same
statements as an unsharded collection's. Reads go through the coordinator, whose planner sends
each shard its part of a query (`retrieval` asks for a top k per shard, run at once).

Writes do not: postgres_fdw has no `ON CONFLICT DO UPDATE`, and rows routed one by one through
the coordinator loaded at a quarter of a direct COPY's rate. This service sends each shard its
own rows, in that shard's own transaction, the shard chosen by PostgreSQL's own hash
partitioning (`place`), so a row is written where the coordinator will look for it.

The shard servers' sessions are the coordinator's postgres_fdw connections, which do not carry
this service's session settings: they are set once per server, in its connection options
(`hnsw.ef_search`, iterative scans for filters, the scan cap). So that a query's own ef_search
reaches the shards, each shard is declared once more per ef_search tier, as a foreign server
whose sessions start with that value, and a search asking for more than the default reads the
shards through the tier's foreign tables (`EfTiers`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from meshsearch_common.database import DatabaseRole
from meshsearch_common.errors import FailedPrecondition, InvalidArgument, Unavailable
from meshsearch_search import keyword
from meshsearch_search.db import Database
from meshsearch_search.domain import Collection

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SHARDS = 64
FOREIGN_SERVER_PREFIX = "meshsearch_shard_"
# libpq options that belong in a user mapping, not in a foreign server's options.
_USER_MAPPING_OPTIONS = {"user", "password", "sslpassword", "sslcert", "sslkey"}
_NAMED_SERVER = re.compile(rf'"{FOREIGN_SERVER_PREFIX}(\d+)(?:_ef\d+)?"')
# Arbitrary but fixed: serialises replicas (re)declaring the shard servers at start-up.
_DECLARE_LOCK_KEY = 0x73686172


def foreign_server(index: int, ef_search: int | None = None) -> str:
    """The coordinator's foreign server for shard `index`: the default one, or that of an
    ef_search tier (its sessions start with that hnsw.ef_search)."""
    return f"{FOREIGN_SERVER_PREFIX}{index}" + (f"_ef{ef_search}" if ef_search else "")


def partition(collection: Collection, index: int, ef_search: int | None = None) -> str:
    """The coordinator's foreign table for shard `index` of the collection's points: the
    partition itself, or the same remote table through an ef_search tier's server."""
    return f"{collection.table}_s{index}" + (f"_ef{ef_search}" if ef_search else "")


@dataclass(frozen=True)
class EfTiers:
    """The hnsw.ef_search values the shards' sessions can run with: `default` (every shard's
    own foreign server) and `tiers` (a foreign server per shard each). postgres_fdw carries no
    session setting to a shard, so a query's ef_search is served by choosing the server."""

    default: int
    tiers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # Only tiers above the default can serve a query (the default servers serve the rest),
        # so only those get servers and tables: sorted, distinct.
        object.__setattr__(self, "tiers", tuple(sorted({tier for tier in self.tiers if tier > self.default})))

    def serving(self, ef_search: int) -> int | None:
        """The tier that serves a query asking for `ef_search`: None (the default servers) up to
        the default, else the smallest tier at least as large, else the largest tier."""
        if ef_search <= self.default or not self.tiers:
            return None
        return next((tier for tier in self.tiers if tier >= ef_search), self.tiers[-1])


# How often a sharded search may need asking again because one shard held more of the best rows
# than it was asked for (see `per_shard_limit`).
RERUN_PROBABILITY = 0.01


@functools.lru_cache(maxsize=4096)
def per_shard_limit(wanted: int, count: int, rerun_probability: float = RERUN_PROBABILITY) -> int:
    """How many of its best rows each of `count` shards sends toward a merged top `wanted`.

    Every row a shard sends costs the coordinator more than the shard's index search did:
    postgres_fdw computes the distance on the coordinator, from the row's vector sent as text
    (parsing 384 floats takes about 30 µs), so `wanted` rows from every shard cost `count`
    times what the merge needs. Hash placement spreads the best `wanted` rows like a binomial
    draw (each row on a given shard with probability 1/count), so a shard rarely holds many
    more than wanted/count of them. This is the smallest limit with at most
    `rerun_probability` that some shard holds more; the search notices when one may have
    (it sent its full limit, all of it inside the merged top) and asks again with `wanted`
    from every shard, so the merge is exactly what every shard's top `wanted` would give."""
    if count <= 1:
        return wanted
    share = 1.0 / count
    above = 1.0  # P(a shard holds more than `limit` of the best rows)
    for limit in range(wanted):
        log_mass = (
            math.lgamma(wanted + 1)
            - math.lgamma(limit + 1)
            - math.lgamma(wanted - limit + 1)
            + limit * math.log(share)
            + (wanted - limit) * math.log1p(-share)
        )
        above -= math.exp(log_mass)
        if count * above <= rerun_probability:
            return limit
    return wanted


def vector_literal(vector: Sequence[float]) -> str:
    """A vector as pgvector's text form with float32's nine significant digits: exact for
    float32, and shorter to send and parse than Python's float64 repr (which needs 17)."""
    return "[" + ",".join(["%.9g"] * len(vector)) % tuple(vector) + "]"


def reachable(relation: str, indexes: Sequence[int]) -> sql.Composable:
    """One of a sharded collection's relations on the coordinator (its points, postings or
    counters: `relation`) read from the given shards only, for a partial answer: the union of
    their foreign tables. The parent would open a connection to every shard, even to scan none."""
    parts = [sql.SQL("SELECT * FROM {}").format(sql.Identifier(f"{relation}_s{index}")) for index in indexes]
    return sql.SQL("({})").format(sql.SQL(" UNION ALL ").join(parts))


def where_of(url: str) -> str:
    """host:port/dbname of a URL, for messages (never its password)."""
    info = conninfo_to_dict(url)
    return f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}/{info.get('dbname') or ''}"


@dataclass(frozen=True)
class Shard:
    index: int
    url: str
    db: Database

    @property
    def name(self) -> str:
        return shard_name(self.index)


def shard_name(index: int) -> str:
    """How callers see a shard: by number only. Its address (`where_of`) is for the log and the
    operator; a status message reaches every tenant."""
    return f"shard {index}"


def shard_role(index: int) -> DatabaseRole:
    return DatabaseRole(shard_name(index), "SHARD_UNAVAILABLE", "MESHSEARCH_SEARCH_POOL_MAX_SIZE")


def session_options(ef_search: int, max_scan_tuples: int) -> str:
    """What every postgres_fdw session on a shard starts with: the default ef_search, and
    iterative scans, so filtered searches still find k rows and a per-shard k larger than
    ef_search is answered (pgvector stops an ordinary scan at ef_search rows)."""
    return (
        f"-c hnsw.ef_search={ef_search} -c hnsw.iterative_scan=relaxed_order -c hnsw.max_scan_tuples={max_scan_tuples}"
    )


def _server_options(
    url: str, connect_timeout_s: int, session: str, application_name: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(foreign server options, user mapping options) for a shard's URL."""
    info = {key: str(value) for key, value in conninfo_to_dict(url).items() if value is not None}
    user = {key: value for key, value in info.items() if key in _USER_MAPPING_OPTIONS}
    server = {key: value for key, value in info.items() if key not in _USER_MAPPING_OPTIONS}
    server["options"] = f"{server.get('options', '')} {session}".strip()
    server |= {
        "extensions": "vector",  # lets pgvector's operators (ORDER BY embedding <=> q) run on the shard
        "async_capable": "true",  # shards of one query are scanned at once
        "fetch_size": "1000",
        "parallel_commit": "true",  # a query's remote transactions end on every shard at once
        "parallel_abort": "true",
        "connect_timeout": str(connect_timeout_s),
        "application_name": application_name,  # which sessions are whose, in the shard's pg_stat_activity
    }
    return server, user


def _options(verb: str, options: dict[str, str]) -> sql.Composed:
    return sql.SQL(", ").join(
        sql.SQL(f"{verb} {{}} {{}}".strip()).format(sql.Identifier(key), sql.Literal(value))
        for key, value in options.items()
    )


def coordinator_tables_sql(collection: Collection, ef_tiers: Sequence[int] = ()) -> list[sql.Composed]:
    """The coordinator's side of a sharded collection: its points and postings as tables
    partitioned by a hash of the id over the shards' tables of the same names, its BM25
    counters as a view over every shard's, and its points' tables of each ef_search tier (made
    here, with the collection, so that a read replica has them before any search needs them).
    Nothing here contacts a shard."""
    spec = collection.spec
    count = spec.shards
    points, terms, stats = collection.table, f"{collection.table}_terms", f"{collection.table}_stats"
    statements = [
        sql.SQL(
            """CREATE TABLE {points} (id text NOT NULL, chunk integer NOT NULL, span_start integer,
                   span_end integer, embedding {column}({dimension}) NOT NULL, text text NOT NULL,
                   metadata jsonb NOT NULL, tsv tsvector, updated_at timestamptz NOT NULL) PARTITION BY HASH (id)"""
        ).format(
            points=sql.Identifier(points),
            column=sql.SQL(spec.storage.column_type),
            dimension=sql.Literal(spec.dimension),
        ),
        sql.SQL(
            "CREATE TABLE {} (lexeme text NOT NULL, id text NOT NULL, tf integer NOT NULL, doc_len integer NOT NULL) "
            "PARTITION BY HASH (id)"
        ).format(sql.Identifier(terms)),
    ]
    for index in range(count):
        for parent in (points, terms):
            statements.append(
                sql.SQL(
                    "CREATE FOREIGN TABLE {part} PARTITION OF {parent} FOR VALUES WITH (MODULUS {count}, "
                    "REMAINDER {index}) SERVER {server} OPTIONS (table_name {remote})"
                ).format(
                    part=sql.Identifier(f"{parent}_s{index}"),
                    parent=sql.Identifier(parent),
                    count=sql.Literal(count),
                    index=sql.Literal(index),
                    server=sql.Identifier(foreign_server(index)),
                    remote=sql.Literal(parent),
                )
            )
        statements.append(
            sql.SQL(
                "CREATE FOREIGN TABLE {} (slot integer NOT NULL, documents bigint NOT NULL, length bigint NOT NULL) "
                "SERVER {} OPTIONS (table_name {})"
            ).format(sql.Identifier(f"{stats}_s{index}"), sql.Identifier(foreign_server(index)), sql.Literal(stats))
        )
    statements += [tier_table_sql(collection, index, tier) for tier in ef_tiers for index in range(count)]
    statements.append(
        sql.SQL("CREATE VIEW {} AS {}").format(
            sql.Identifier(stats),
            sql.SQL(" UNION ALL ").join(
                sql.SQL("SELECT * FROM {}").format(sql.Identifier(f"{stats}_s{index}")) for index in range(count)
            ),
        )
    )
    return statements


def tier_table_sql(collection: Collection, index: int, ef_search: int) -> sql.Composed:
    """The foreign table through which shard `index`'s points are read with `ef_search`: the
    partition's columns, the same remote table, the tier's server. Not a partition (a table is
    a partition of one parent only), so it is read by name and written never."""
    return sql.SQL(
        "CREATE FOREIGN TABLE IF NOT EXISTS {tier} (LIKE {points}) SERVER {server} OPTIONS (table_name {remote})"
    ).format(
        tier=sql.Identifier(partition(collection, index, ef_search)),
        points=sql.Identifier(collection.table),
        server=sql.Identifier(foreign_server(index, ef_search)),
        remote=sql.Literal(collection.table),
    )


def coordinator_drop_sql(collection: Collection) -> list[sql.Composed]:
    """Statements that drop what `coordinator_tables_sql` and `tier_table_sql` made (the shards'
    data stays: `Shards.drop`). The tier tables are found in the catalog, so those of tiers no
    longer configured go too; the lock keeps `Shards.ensure_tier` from adding one meanwhile."""
    stats = f"{collection.table}_stats"
    tier_tables = sql.Literal(f"^{re.escape(collection.table)}_s[0-9]+_ef[0-9]+$")
    return [
        sql.SQL("SELECT pg_advisory_xact_lock({})").format(sql.Literal(_DECLARE_LOCK_KEY)),
        sql.SQL(
            "DO $drop$ DECLARE name text; BEGIN FOR name IN SELECT c.relname FROM pg_foreign_table f "
            "JOIN pg_class c ON c.oid = f.ftrelid WHERE c.relname ~ {pattern} "
            "LOOP EXECUTE format('DROP FOREIGN TABLE %I', name); END LOOP; END $drop$"
        ).format(pattern=tier_tables),
        sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(stats)),
        *(
            sql.SQL("DROP FOREIGN TABLE IF EXISTS {}").format(sql.Identifier(f"{stats}_s{index}"))
            for index in range(collection.spec.shards)
        ),
        sql.SQL("DROP TABLE IF EXISTS {}, {}").format(
            sql.Identifier(collection.table), sql.Identifier(f"{collection.table}_terms")
        ),
    ]


def _shard_drop_sql(collection: Collection) -> list[sql.Composed]:
    return [
        sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(collection.table)),
        *keyword.uninstall(collection),
        sql.SQL("DELETE FROM meshsearch_collections WHERE id = {}").format(sql.Literal(collection.id)),
    ]


class Shards:
    """The configured shard servers: their connections for writes, and on the coordinator the
    foreign servers through which its planner reads them."""

    def __init__(self, shards: Sequence[Shard], ef_tiers: EfTiers | None = None) -> None:
        self.all = list(shards)
        self.ef_tiers = ef_tiers or EfTiers(default=0)
        self._tier_tables: set[tuple[int, int]] = set()  # (collection id, tier) known to exist

    async def declare(self, coordinator: psycopg.AsyncConnection, connect_timeout_s: int, max_scan_tuples: int) -> None:
        """Create or update the coordinator's foreign servers (one per shard and ef_search tier)
        and user mappings, so a changed URL or password takes effect on the next start
        (autocommit connection). Servers of tiers no longer configured stay, unused: a replica
        still running the old configuration may read through them."""
        async with coordinator.transaction():
            await coordinator.execute("SELECT pg_advisory_xact_lock(%s)", (_DECLARE_LOCK_KEY,))
            await coordinator.execute("CREATE EXTENSION IF NOT EXISTS postgres_fdw")
            for shard in self.all:
                for tier in (None, *self.ef_tiers.tiers):
                    ef_search = tier or self.ef_tiers.default
                    server_options, user_options = _server_options(
                        shard.url,
                        connect_timeout_s,
                        session_options(ef_search, max_scan_tuples),
                        f"meshsearch-coordinator-ef{ef_search}",
                    )
                    await self._declare_server(
                        coordinator, foreign_server(shard.index, tier), server_options, user_options
                    )

    async def _declare_server(
        self,
        coordinator: psycopg.AsyncConnection,
        server: str,
        server_options: dict[str, str],
        user_options: dict[str, str],
    ) -> None:
        """Create or update one foreign server and the user mapping through which it is reached."""
        name = sql.Identifier(server)
        exists = await (
            await coordinator.execute("SELECT srvoptions FROM pg_foreign_server WHERE srvname = %s", (server,))
        ).fetchone()
        if exists is None:
            await coordinator.execute(
                sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER postgres_fdw OPTIONS ({})").format(
                    name, _options("", server_options)
                )
            )
        else:
            held = {item.split("=", 1)[0] for item in exists[0] or []}
            await coordinator.execute(
                sql.SQL("ALTER SERVER {} OPTIONS ({})").format(
                    name,
                    sql.SQL(", ").join(
                        [
                            *(
                                _options("SET" if key in held else "ADD", {key: value})
                                for key, value in server_options.items()
                            ),
                            *(sql.SQL("DROP {}").format(sql.Identifier(key)) for key in held - server_options.keys()),
                        ]
                    ),
                )
            )
        await coordinator.execute(sql.SQL("DROP USER MAPPING IF EXISTS FOR CURRENT_USER SERVER {}").format(name))
        await coordinator.execute(
            sql.SQL("CREATE USER MAPPING FOR CURRENT_USER SERVER {} OPTIONS ({})").format(
                name, _options("", user_options)
            )
            if user_options
            else sql.SQL("CREATE USER MAPPING FOR CURRENT_USER SERVER {}").format(name)
        )

    async def ensure_tier(self, coordinator: Database, collection: Collection, ef_search: int) -> None:
        """Make the collection's foreign tables of tier `ef_search` on the coordinator if they are
        missing, once per process, when first searched with it: a collection made before the
        tier was configured (or by a replica without it) gets them too. Under the declaring lock,
        and only while the collection exists (its drop takes the lock), so none is left behind
        by a search racing a drop."""
        key = (collection.id, ef_search)
        if key in self._tier_tables:
            return
        async with coordinator.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DECLARE_LOCK_KEY,))
            found = await conn.execute("SELECT 1 FROM meshsearch_collections WHERE id = %s", (collection.id,))
            if await found.fetchone() is None:
                return
            for index in range(collection.spec.shards):
                await conn.execute(tier_table_sql(collection, index, ef_search))
        self._tier_tables.add(key)

    def check(self, count: int) -> None:
        """A collection may be created with `count` shards."""
        if not 0 <= count <= MAX_SHARDS:
            raise InvalidArgument(f"shards {count} is out of range: 0 to {MAX_SHARDS}", field="shards")
        if count > 1 and count > len(self.all):
            raise FailedPrecondition(
                f"a collection of {count} shards needs {count} shard servers, and this search service has "
                f"{len(self.all)} (MESHSEARCH_SEARCH_SHARD_URLS)",
                reason="TOO_FEW_SHARDS",
            )

    def of(self, collection: Collection) -> list[Shard]:
        """The shards holding `collection`'s points."""
        if collection.spec.shards > len(self.all):
            raise Unavailable(
                f"collection '{collection.spec.name}' is spread over {collection.spec.shards} shards, but only "
                f"{len(self.all)} are configured (MESHSEARCH_SEARCH_SHARD_URLS)",
                reason="SHARD_UNAVAILABLE",
            )
        return self.all[: collection.spec.shards]

    async def each(
        self, collection: Collection, operation: Callable[[Shard], Awaitable[T]], only: set[int] | None = None
    ) -> list[T]:
        """Run `operation` on every shard of the collection (or those in `only`) at once; the
        first failure, by shard, once all have finished: none is left running unobserved."""
        shards = [shard for shard in self.of(collection) if only is None or shard.index in only]
        outcomes = await asyncio.gather(*(operation(shard) for shard in shards), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return outcomes  # type: ignore[return-value]

    async def place_rows(self, coordinator: Database, collection: Collection, ids: list[str]) -> list[int]:
        """The shard owning each id, in order, by the coordinator's own hash partitioning (the
        rule its planner prunes by), in one round trip."""
        statement = sql.SQL(
            "SELECT r.index FROM unnest(%s::text[]) WITH ORDINALITY AS d(id, position), "
            "generate_series(0, %s - 1) AS r(index) "
            "WHERE satisfies_hash_partition({parent}::regclass::oid, %s, r.index, d.id) ORDER BY d.position"
        ).format(parent=sql.Literal(collection.table))
        count = collection.spec.shards
        async with coordinator.transaction() as conn:
            rows = await (await conn.execute(statement, (ids, count, count))).fetchall()
        return [int(row[0]) for row in rows]

    async def place(self, coordinator: Database, collection: Collection, ids: list[str]) -> dict[int, list[str]]:
        """`place_rows` as {shard index: its ids}."""
        owned: dict[int, list[str]] = {}
        for point_id, index in zip(ids, await self.place_rows(coordinator, collection, ids), strict=True):
            owned.setdefault(index, []).append(point_id)
        return owned

    async def create(self, collection: Collection, statements: list[sql.Composed]) -> None:
        """Make the collection's row, table, indexes and BM25 statistics on each of its shards
        (anything left there by an earlier failed attempt is dropped first); on a failure, undo
        what was made and raise."""

        async def make(shard: Shard) -> None:
            async with shard.db.transaction() as conn:
                for statement in _shard_drop_sql(collection):
                    await conn.execute(statement)
                await conn.execute(
                    """INSERT INTO meshsearch_collections (id, name, dimension, metric, storage, hnsw_m,
                           hnsw_ef_construction, model_id, model_revision, model_dimension, model_normalized)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                    (
                        collection.id,
                        f"{collection.spec.name}#shard{shard.index}",
                        collection.spec.dimension,
                        collection.spec.metric.value,
                        collection.spec.storage.value,
                        collection.spec.hnsw_m,
                        collection.spec.hnsw_ef_construction,
                        collection.spec.model.id,
                        collection.spec.model.revision,
                        collection.spec.dimension,
                        collection.spec.model.normalized,
                    ),
                )
                for statement in statements:
                    await conn.execute(statement)

        try:
            await self.each(collection, make)
        except BaseException:
            await asyncio.gather(
                *(self._drop_on(shard, collection) for shard in self.of(collection)), return_exceptions=True
            )
            raise

    async def _drop_on(self, shard: Shard, collection: Collection) -> None:
        async with shard.db.transaction() as conn:
            for statement in _shard_drop_sql(collection):
                await conn.execute(statement)

    async def drop(self, collection: Collection) -> None:
        """Drop the collection's data on every shard (idempotent: a retry after a shard was
        down finishes the job)."""
        await self.each(collection, lambda shard: self._drop_on(shard, collection))

    def unreached(self, error: Unavailable) -> Shard | None:
        """The shard the coordinator's error is about, if any: postgres_fdw names the foreign
        server (`could not connect to server "meshsearch_shard_1"`) in the driver's error, which
        the database layer keeps on `__cause__`."""
        found = _NAMED_SERVER.search(f"{error.message} {error.__cause__ or ''}")
        if found is None or int(found.group(1)) >= len(self.all):
            return None
        return self.all[int(found.group(1))]

    def named(self, error: Unavailable) -> Unavailable:
        """The coordinator's error about a foreign server, restated as that shard's, by number;
        the driver's words (the shard's address among them) go to the log."""
        shard = self.unreached(error)
        if shard is None:
            return error
        log.warning(
            "shard unreachable",
            extra={"shard": shard.index, "at": where_of(shard.url), "error": str(error.__cause__ or error)},
        )
        return Unavailable(
            f"{shard.name} is unavailable: the search service cannot reach it; retry shortly, or set "
            "allow_partial_results for an answer from the other shards",
            reason="SHARD_UNAVAILABLE",
        )
