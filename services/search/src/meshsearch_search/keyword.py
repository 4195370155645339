"""Keyword ranking with BM25, kept inside PostgreSQL.

PostgreSQL's full-text search parses and stems text (the `english` configuration) but its own
ranking (`ts_rank`) has no document frequencies, and `websearch_to_tsquery` ANDs the words of
a query, so natural-language questions mostly match nothing. BM25 needs three statistics, and
each collection keeps them up to date on every write, by statement-level triggers that see the
rows a statement inserted, updated or deleted (transition tables, one set-based statement each):

- `<points>_terms`: one row per (lexeme, document) with the term's frequency and the document's
  length in lexemes: the postings. A query reads only the postings of its own words, through
  the primary key, and a lexeme's document frequency is the number of those postings;
- `<points>_stats`: document count and total length, spread over STATS_SLOTS rows chosen by
  backend, so concurrent writers rarely wait on one another's counter row (`claim_counter`).

Only a document's first row (chunk 0) carries its text, so chunks never count twice.
The query's words are ORed: every document holding at least one of them is scored.
"""

from __future__ import annotations

from psycopg import sql

from meshsearch_search.domain import Collection

TEXT_SEARCH_CONFIG = "english"
# BM25 parameters: Robertson's usual k1 = 1.2, b = 0.75. On SciFact's test queries they scored
# nDCG@10 0.691 against 0.689 for Anserini's k1 = 0.9, b = 0.4 (docs/benchmarks.md).
BM25_K1 = 1.2
BM25_B = 0.75
STATS_SLOTS = 16


def _names(collection: Collection) -> dict[str, sql.Composable]:
    table = collection.table
    return {
        "points": sql.Identifier(table),
        "terms": sql.Identifier(f"{table}_terms"),
        "stats": sql.Identifier(f"{table}_stats"),
        "on_insert": sql.Identifier(f"{table}_on_insert"),
        "on_update": sql.Identifier(f"{table}_on_update"),
        "on_delete": sql.Identifier(f"{table}_on_delete"),
        "slots": sql.Literal(STATS_SLOTS),
    }


# Postings and statistics of the documents in `source` (a relation: the points table itself, or
# a trigger's transition table); `sign` is 1 to add them, -1 to take them away.
_ADD_POSTINGS = """
    INSERT INTO {terms} (lexeme, id, tf, doc_len)
    SELECT u.lexeme, s.id, coalesce(cardinality(u.positions), 1), l.len
      FROM {source} s,
           LATERAL (SELECT coalesce(sum(coalesce(cardinality(p.positions), 1)), 0)::int AS len
                      FROM unnest(s.tsv) p) l,
           unnest(s.tsv) u
     WHERE s.chunk = 0;
"""
_REMOVE_POSTINGS = """
    DELETE FROM {terms} t USING {source} s
     WHERE s.chunk = 0 AND t.id = s.id AND t.lexeme = ANY (tsvector_to_array(s.tsv));
"""
_COUNT = """
    UPDATE {stats} c SET documents = c.documents + d.documents, length = c.length + d.length
      FROM (SELECT {sign} * count(*) AS documents, {sign} * coalesce(sum(l.len), 0) AS length
              FROM {source} s,
                   LATERAL (SELECT coalesce(sum(coalesce(cardinality(p.positions), 1)), 0) AS len
                              FROM unnest(s.tsv) p) l
             WHERE s.chunk = 0
            HAVING count(*) > 0) d
     WHERE c.slot = pg_backend_pid() % {slots};
"""


def _body(names: dict[str, sql.Composable], *steps: tuple[str, str, int]) -> sql.Composed:
    parts = [
        sql.SQL(template).format(source=sql.Identifier(source), sign=sql.Literal(sign), **names)
        for template, source, sign in steps
    ]
    return sql.SQL(" ").join(parts)


def install(collection: Collection) -> list[sql.Composed]:
    """Statements that create the BM25 statistics of a collection and the triggers that keep
    them current, then fill them from the rows already stored (none for a new collection)."""
    names = _names(collection)
    added = (_ADD_POSTINGS, "new_rows", 1), (_COUNT, "new_rows", 1)
    removed = (_REMOVE_POSTINGS, "old_rows", -1), (_COUNT, "old_rows", -1)

    def function(name: sql.Composable, body: sql.Composable) -> sql.Composed:
        return sql.SQL(
            "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN {body} RETURN NULL; END $fn$"
        ).format(name=name, body=body)

    return [
        sql.SQL(
            """CREATE TABLE {terms} (lexeme text NOT NULL, id text NOT NULL, tf integer NOT NULL,
                                     doc_len integer NOT NULL, PRIMARY KEY (lexeme, id))"""
        ).format(**names),
        sql.SQL(
            "CREATE TABLE {stats} (slot integer PRIMARY KEY, documents bigint NOT NULL, length bigint NOT NULL)"
        ).format(**names),
        sql.SQL("INSERT INTO {stats} SELECT slot, 0, 0 FROM generate_series(0, {slots} - 1) slot").format(**names),
        function(names["on_insert"], _body(names, *added)),
        function(names["on_update"], _body(names, *removed, *added)),
        function(names["on_delete"], _body(names, *removed)),
        sql.SQL(
            """CREATE TRIGGER keyword_insert AFTER INSERT ON {points}
                   REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {on_insert}()"""
        ).format(**names),
        sql.SQL(
            """CREATE TRIGGER keyword_update AFTER UPDATE ON {points}
                   REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                   FOR EACH STATEMENT EXECUTE FUNCTION {on_update}()"""
        ).format(**names),
        sql.SQL(
            """CREATE TRIGGER keyword_delete AFTER DELETE ON {points}
                   REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {on_delete}()"""
        ).format(**names),
        _body(names, (_ADD_POSTINGS, collection.table, 1), (_COUNT, collection.table, 1)),
    ]


def uninstall(collection: Collection) -> list[sql.Composed]:
    """Statements that drop what `install` created (after the points table is dropped)."""
    names = _names(collection)
    return [
        sql.SQL("DROP TABLE IF EXISTS {terms}, {stats}").format(**names),
        sql.SQL("DROP FUNCTION IF EXISTS {on_insert}(), {on_update}(), {on_delete}()").format(**names),
    ]


def claim_counter(collection: Collection) -> sql.Composed:
    """Lock this backend's counter row; every write transaction runs it first.

    The triggers update the counter after a statement's rows are locked. Two transactions
    sharing a counter row (backends with equal pid modulo STATS_SLOTS) that wrote overlapping
    documents could then each hold what the other waits for. Taking the counter first gives
    every writer the same lock order: counter, then rows (sorted by id)."""
    return sql.SQL("SELECT 1 FROM {stats} WHERE slot = pg_backend_pid() % {slots} FOR UPDATE").format(
        **_names(collection)
    )


def document_count(collection: Collection) -> sql.Composed:
    """The number of documents, from the statistics (no scan of the points)."""
    return sql.SQL("SELECT coalesce(sum(documents), 0) FROM {stats}").format(**_names(collection))


def ranked(collection: Collection, relations: dict[str, sql.Composable] | None = None) -> sql.Composed:
    """(id, score) of every document holding a word of the query (parameter 1), by BM25.

    The postings are read by the query's lexemes as one array, which a sharded collection's
    coordinator sends to every shard (a join could pull each shard's postings across); document
    frequencies and counts are then summed over all shards, so scores are the same as on one
    server. IDF is Lucene's non-negative form, ln(1 + (N - df + 0.5) / (df + 0.5)); arithmetic is in
    float8 (numeric made the sum ten times slower). `relations` may stand in for the postings
    (`terms`) and counters (`stats`), as for a partial answer of a sharded collection."""
    return sql.SQL(
        """SELECT p.id, sum(ln(1 + greatest(n.documents - p.df + 0.5, 0) / (p.df + 0.5))
                         * p.tf * ({k1} + 1) / (p.tf + {k1} * (1 - {b} + {b} * p.doc_len / n.avgdl))) AS score
             FROM (SELECT t.id, t.tf::float8 AS tf, t.doc_len::float8 AS doc_len,
                          (count(*) OVER (PARTITION BY t.lexeme))::float8 AS df
                     FROM {terms} t
                    WHERE t.lexeme = ANY(ARRAY(SELECT DISTINCT lexeme FROM unnest(to_tsvector({config}, %s))))) p,
                  (SELECT coalesce(sum(documents), 0)::float8 AS documents,
                          greatest(coalesce(sum(length), 0)::float8 / greatest(sum(documents), 1), 1) AS avgdl
                     FROM {stats}) n
            GROUP BY p.id"""
    ).format(
        k1=sql.Literal(BM25_K1),
        b=sql.Literal(BM25_B),
        config=sql.Literal(TEXT_SEARCH_CONFIG),
        **{**_names(collection), **(relations or {})},
    )
