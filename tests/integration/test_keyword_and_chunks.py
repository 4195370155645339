"""BM25 statistics and chunked documents against the real PostgreSQL + pgvector.

The statistics are maintained by triggers on every write path; these tests rebuild them from
the stored rows after a mix of writes (and concurrent writers) and require them to agree, and
compare the SQL ranking with BM25 computed here from the same lexemes.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from meshsearch_search import keyword, schema
from meshsearch_search.collections import CollectionStore
from meshsearch_search.db import Database
from meshsearch_search.domain import Chunk, Collection, CollectionSpec, Point
from meshsearch_search.filters import FieldCondition, Filter
from meshsearch_search.points import PointLimits, PointStore
from meshsearch_search.retrieval import QuerySpec, Retriever
from meshsearch_search.settings import SearchSettings
from tests.integration.search_core import search_core

DIMENSION = 8
LIMITS = PointLimits.from_settings(SearchSettings(max_k=100, exact_filter_max_rows=50))
WORDS = "protein cell cancer gene mouse tumour receptor signal pathway brain insulin virus".split()


def unit(rng: np.random.Generator) -> np.ndarray:
    vector = rng.standard_normal(DIMENSION).astype(np.float32)
    return vector / np.linalg.norm(vector)


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[Database, CollectionStore, PointStore, Retriever]]:
    async with search_core(database_url, LIMITS, pool_size=8) as core:
        yield core.db, core.collections, core.points, core.retriever


async def new_collection(collections: CollectionStore) -> Collection:
    return await collections.create(CollectionSpec(name=f"kw_{uuid.uuid4().hex[:8]}", dimension=DIMENSION))


async def rows(
    db: Database, statement: sql.Composed | sql.SQL, params: list[Any] | None = None
) -> list[tuple[Any, ...]]:
    async with db.read({}) as conn:
        return await (await conn.execute(statement, params)).fetchall()


async def assert_statistics_exact(db: Database, collection: Collection) -> None:
    """The maintained postings and counters equal what the stored documents give."""
    table = sql.Identifier(collection.table)
    rebuilt = await rows(
        db,
        sql.SQL(
            "SELECT u.lexeme, d.id, coalesce(cardinality(u.positions), 1) FROM {} d, unnest(d.tsv) u WHERE d.chunk = 0"
        ).format(table),
    )
    stored = await rows(
        db, sql.SQL("SELECT lexeme, id, tf FROM {}").format(sql.Identifier(f"{collection.table}_terms"))
    )
    assert sorted(stored) == sorted(rebuilt)
    documents = await rows(db, sql.SQL("SELECT count(*) FROM {} WHERE chunk = 0").format(table))
    counters = await rows(
        db, sql.SQL("SELECT sum(documents), sum(length) FROM {}").format(sql.Identifier(f"{collection.table}_stats"))
    )
    assert counters[0][0] == documents[0][0]
    assert counters[0][1] == sum(tf for _, _, tf in rebuilt)


async def reference_bm25(db: Database, collection: Collection, query: str) -> dict[str, float]:
    """BM25 (k1 = 1.2, b = 0.75, Lucene's idf) computed in Python from PostgreSQL's lexemes."""
    docs: dict[str, dict[str, int]] = {}
    for lexeme, point_id, tf in await rows(
        db,
        sql.SQL(
            "SELECT u.lexeme, d.id, coalesce(cardinality(u.positions), 1) FROM {} d, unnest(d.tsv) u WHERE d.chunk = 0"
        ).format(sql.Identifier(collection.table)),
    ):
        docs.setdefault(point_id, {})[lexeme] = tf
    count = (
        await rows(db, sql.SQL("SELECT count(*) FROM {} WHERE chunk = 0").format(sql.Identifier(collection.table)))
    )[0][0]
    lengths = {point_id: sum(tfs.values()) for point_id, tfs in docs.items()}
    average = max(sum(lengths.values()) / max(count, 1), 1)
    terms = {
        lexeme
        for (lexeme,) in await rows(db, sql.SQL("SELECT lexeme FROM unnest(to_tsvector('english', %s))"), [query])
    }
    scores: dict[str, float] = {}
    for term in terms:
        df = sum(1 for tfs in docs.values() if term in tfs)
        idf = math.log(1 + (count - df + 0.5) / (df + 0.5))
        for point_id, tfs in docs.items():
            if term in tfs:
                tf = tfs[term]
                norm = tf + keyword.BM25_K1 * (1 - keyword.BM25_B + keyword.BM25_B * lengths[point_id] / average)
                scores[point_id] = scores.get(point_id, 0.0) + idf * tf * (keyword.BM25_K1 + 1) / norm
    return scores


async def test_bm25_statistics_follow_every_write_and_rank_as_bm25(stores) -> None:
    db, collections, points, retriever = stores
    collection = await new_collection(collections)
    name = collection.spec.name
    text_rng, vector_rng = random.Random(7), np.random.default_rng(7)
    docs = [
        Point(id=f"d{i}", text=sentence(text_rng, 5 + i % 17), metadata={"group": i % 3}, vector=unit(vector_rng))
        for i in range(120)
    ]
    assert (await points.upsert(name, docs, None))[0] == 120
    # Rewrites (new text), removals by id and by filter, a chunked document: each changes the statistics.
    rewritten = [Point(id=d.id, text=sentence(text_rng, 30), metadata={"group": 9}, vector=d.vector) for d in docs[:20]]
    await points.upsert(name, rewritten, None)
    assert await points.delete(name, ["d20", "d21", "missing"]) == 2
    assert await points.delete(name, [], Filter(must=(FieldCondition("group", "eq", 1),))) > 0
    text = sentence(text_rng, 60)
    chunks = (Chunk(unit(vector_rng), 0, 100), Chunk(unit(vector_rng), 80, len(text)))
    await points.upsert(name, [Point(id="long", text=text, metadata={}, chunks=chunks)], None)
    await assert_statistics_exact(db, collection)

    query = "Which receptor signals in brain tumour cells?"
    expected = await reference_bm25(db, collection, query)
    hits = await retriever.query(name, QuerySpec(vector=None, text=query, k=100))
    assert len(hits) == min(100, len(expected))
    for hit in hits:
        assert hit.score == pytest.approx(expected[hit.point.id], rel=1e-6)
        assert hit.span is None  # keyword search ranks whole documents
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # A question whose words are mostly absent still finds the documents holding any of them.
    assert await retriever.query(name, QuerySpec(vector=None, text="what about the insulin of whales", k=5))


async def test_concurrent_overlapping_writers_neither_deadlock_nor_skew_statistics(stores) -> None:
    db, collections, points, _ = stores
    collection = await new_collection(collections)
    name = collection.spec.name
    vector_rng = np.random.default_rng(3)
    vectors = [unit(vector_rng) for _ in range(40)]

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(8):
            chosen = rng.sample(range(40), 15)  # overlapping sets, in random order
            batch = [
                Point(id=f"d{i}", text=sentence(rng, rng.randint(3, 25)), metadata={}, vector=vectors[i])
                for i in chosen
            ]
            await points.upsert(name, batch, None)
            if rng.random() < 0.3:
                await points.delete(name, [f"d{rng.randrange(40)}"])

    await asyncio.wait_for(asyncio.gather(*(writer(seed) for seed in range(8))), timeout=120)
    await assert_statistics_exact(db, collection)


async def test_chunked_documents_are_found_by_their_best_chunk_and_replaced_whole(stores) -> None:
    db, collections, points, retriever = stores
    collection = await new_collection(collections)
    name = collection.spec.name
    rng = np.random.default_rng(11)
    text = "First part about cells. " * 10 + "Second part about genes. " * 10
    pieces = [Chunk(unit(rng), 0, 200), Chunk(unit(rng), 150, 400), Chunk(unit(rng), 350, len(text))]
    others = [Point(id=f"o{i}", text=f"other {i}", metadata={"n": i}, vector=unit(rng)) for i in range(30)]
    await points.upsert(
        name, [Point(id="long", text=text, metadata={"kind": "long"}, chunks=tuple(pieces)), *others], None
    )
    assert (await collections.get(name)).point_count == 31  # documents, not chunks

    for exact in (False, True):
        hits = await retriever.query(name, QuerySpec(vector=pieces[1].vector, k=5, exact=exact))
        assert hits[0].point.id == "long" and hits[0].point.text == text
        assert hits[0].span is not None and (hits[0].span.chunk, hits[0].span.start, hits[0].span.end) == (1, 150, 400)
        assert len({h.point.id for h in hits}) == len(hits) == 5  # one hit per document
    filtered = await retriever.query(
        name, QuerySpec(vector=pieces[2].vector, k=3, filter=Filter(must=(FieldCondition("kind", "eq", "long"),)))
    )
    assert [h.point.id for h in filtered] == ["long"] and filtered[0].span.chunk == 2
    single = await retriever.query(name, QuerySpec(vector=others[4].vector, k=1))
    assert single[0].span is not None and (single[0].span.chunk, single[0].span.start, single[0].span.end) == (0, 0, 7)

    # Re-indexing with fewer chunks leaves none of the old ones behind; deleting removes all.
    await points.upsert(name, [Point(id="long", text="now short", metadata={}, vector=pieces[2].vector)], None)
    table = sql.Identifier(collection.table)
    assert await rows(db, sql.SQL("SELECT chunk, span_end FROM {} WHERE id = 'long'").format(table)) == [(0, None)]
    got, _ = await points.get(name, ["long"], include_vectors=False)
    assert got[0].text == "now short"
    assert await points.delete(name, ["long"]) == 1
    assert await rows(db, sql.SQL("SELECT count(*) FROM {} WHERE id = 'long'").format(table)) == [(0,)]
    await assert_statistics_exact(db, collection)


@pytest.mark.parametrize(
    ("chunks", "fragment"),
    [
        ([(0, 5), (7, 9)], "start at or before"),
        ([(0, 50)], "lie in the text"),
        ([(3, 3)], "be non-empty"),
    ],
)
async def test_chunks_outside_the_text_or_with_gaps_are_refused_per_item(stores, chunks, fragment) -> None:
    _, collections, points, _ = stores
    collection = await new_collection(collections)
    rng = np.random.default_rng(1)
    bad = Point(id="bad", text="0123456789", metadata={}, chunks=tuple(Chunk(unit(rng), s, e) for s, e in chunks))
    good = Point(id="good", text="fine", metadata={}, vector=unit(rng))
    written, errors, _ = await points.upsert(collection.spec.name, [bad, good], None)
    assert written == 1 and [e.id for e in errors] == ["bad"] and fragment in errors[0].message


async def test_migration_turns_version_1_collections_into_searchable_documents(database_url: str, monkeypatch) -> None:
    """A database written by the previous release (schema version 1) keeps every point, which
    becomes a one-chunk document with BM25 statistics."""
    database = f"migrate_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = psycopg.conninfo.make_conninfo(database_url, dbname=database)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        assert await schema.migrate(conn) == 1
        monkeypatch.undo()
        # The version 1 layout, as the previous release created it.
        await conn.execute(
            """INSERT INTO meshsearch_collections (id, name, dimension, metric, storage, hnsw_m, hnsw_ef_construction)
               VALUES (1, 'old', 3, 'cosine', 'float32', 16, 64)"""
        )
        await conn.execute(
            """CREATE TABLE meshsearch_points_1 (
                   id text PRIMARY KEY, embedding vector(3) NOT NULL, text text NOT NULL DEFAULT '',
                   metadata jsonb NOT NULL DEFAULT '{}',
                   tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED,
                   updated_at timestamptz NOT NULL DEFAULT now());
               CREATE INDEX meshsearch_points_1_tsv ON meshsearch_points_1 USING gin (tsv);
               INSERT INTO meshsearch_points_1 (id, embedding, text) VALUES
                   ('a', '[1,0,0]', 'insulin resistance in mice'), ('b', '[0,1,0]', 'tumour suppressor genes');"""
        )
        assert await schema.migrate(conn) == schema.MIGRATIONS[-1][0]
    async with search_core(url, LIMITS, pool_size=2) as core:
        assert (await core.collections.get("old")).point_count == 2
        hits = await core.retriever.query("old", QuerySpec(vector=None, text="genes that suppress tumours", k=2))
        assert [h.point.id for h in hits] == ["b"]
        near = await core.retriever.query("old", QuerySpec(vector=np.array([1, 0.1, 0], np.float32), k=1))
        assert near[0].point.id == "a" and near[0].span is not None
        assert near[0].span.end == len("insulin resistance in mice")
        await core.points.upsert("old", [Point(id="c", text="mice", metadata={}, vector=np.ones(3, np.float32))], None)
        await assert_statistics_exact(core.db, await core.collections.get("old"))
