"""The search core against a real PostgreSQL + pgvector (the session's embedded server)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import numpy as np
import psycopg
import pytest

from meshsearch_common.errors import InvalidArgument, NotFound
from meshsearch_search.collections import CollectionStore
from meshsearch_search.domain import CollectionSpec, Point, Storage
from meshsearch_search.filters import FieldCondition, Filter
from meshsearch_search.points import PointLimits, PointStore
from meshsearch_search.retrieval import QuerySpec, Retriever
from meshsearch_search.schema import migrate
from meshsearch_search.settings import SearchSettings
from tests.integration.search_core import search_core

DIMENSION = 16
COUNT = 3000
LIMITS = PointLimits.from_settings(
    SearchSettings(
        max_batch_points=1000,
        max_text_bytes=10_000,
        max_metadata_bytes=10_000,
        max_k=100,
        max_ef_search=400,
        default_ef_search=40,
        exact_filter_max_rows=200,
    )
)
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def metadata_of(i: int) -> dict[str, Any]:
    return {
        "bucket10": i % 10,
        "bucket100": i % 100,
        "color": ["red", "green", "blue"][i % 3],
        "tags": [WORDS[i % 8], WORDS[(i * 3) % 8]],
        "price": (i * 7919) % 1000 / 10,
        **({"rare": True} if i % 250 == 0 else {}),
        "nested": {"level": i % 4},
    }


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[tuple[CollectionStore, PointStore, Retriever]]:
    async with search_core(database_url, LIMITS) as core:
        yield core.collections, core.points, core.retriever


@pytest.fixture(scope="module")
def dataset(rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((COUNT, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def fill(
    collections: CollectionStore, points: PointStore, dataset: np.ndarray, storage: Storage = Storage.FLOAT32
) -> str:
    name = f"store_{uuid.uuid4().hex[:8]}"
    await collections.create(CollectionSpec(name=name, dimension=DIMENSION, storage=storage))
    batch = [
        Point(id=f"p{i:05d}", text=f"{WORDS[i % 8]} document number {i}", metadata=metadata_of(i), vector=dataset[i])
        for i in range(COUNT)
    ]
    for start in range(0, COUNT, 1000):
        written, errors, _ = await points.upsert(name, batch[start : start + 1000], None)
        assert written == len(batch[start : start + 1000]) and not errors
    return name


def matches(node: Filter | FieldCondition, meta: dict[str, Any]) -> bool:
    """Reference semantics of filters, in plain Python."""
    if isinstance(node, FieldCondition):
        value: Any = meta
        for part in node.key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        present = value is not None
        items = value if isinstance(value, list) else [value]
        if node.operator == "exists":
            return present == node.value
        if node.operator == "eq":
            return present and node.value in items
        if node.operator == "in":
            return present and any(v in items for v in node.value)
        bounds = node.value
        return present and any(
            isinstance(v, (int, float))
            and ("gt" not in bounds or v > bounds["gt"])
            and ("gte" not in bounds or v >= bounds["gte"])
            and ("lt" not in bounds or v < bounds["lt"])
            and ("lte" not in bounds or v <= bounds["lte"])
            for v in items
        )
    return (
        all(matches(c, meta) for c in node.must)
        and (not node.should or any(matches(c, meta) for c in node.should))
        and not any(matches(c, meta) for c in node.must_not)
    )


FILTERS = [
    Filter(must=(FieldCondition("bucket10", "eq", 3),)),
    Filter(
        must=(FieldCondition("color", "in", ["red", "blue"]), FieldCondition("price", "range", {"gte": 20, "lt": 60}))
    ),
    Filter(should=(FieldCondition("tags", "eq", "golf"), FieldCondition("rare", "exists", True))),
    Filter(must_not=(FieldCondition("color", "eq", "green"),), must=(FieldCondition("nested.level", "eq", 2),)),
    Filter(must=(Filter(should=(FieldCondition("bucket100", "eq", 7), FieldCondition("bucket100", "eq", 8))),)),
    Filter(must=(FieldCondition("rare", "exists", False), FieldCondition("price", "range", {"gt": 99.5}))),
]


@pytest.mark.parametrize("node", FILTERS)
async def test_filters_select_exactly_what_the_reference_semantics_select(stores, dataset, node: Filter) -> None:
    collections, points, retriever = stores
    name = await fill(collections, points, dataset)
    expected = {f"p{i:05d}" for i in range(COUNT) if matches(node, metadata_of(i))}
    found: list[str] = []
    cursor = ""
    while True:
        page, cursor = await points.scroll(name, node, 500, cursor, include_vectors=False)
        found += [p.id for p in page]
        if not cursor:
            break
    assert found == sorted(found) and len(found) == len(set(found))
    assert set(found) == expected


@pytest.mark.parametrize("exact_filter_max_rows", [200, 0])  # exact path, iterative HNSW path
async def test_selective_filters_still_return_k_correct_rows(stores, dataset, rng, exact_filter_max_rows: int) -> None:
    collections, points, retriever = stores
    name = await fill(collections, points, dataset)
    retriever = Retriever(
        points._db, PointStore(points._db, collections, replace(LIMITS, exact_filter_max_rows=exact_filter_max_rows))
    )
    node = Filter(must=(FieldCondition("bucket100", "eq", 42),))  # 1% of points: 30 match
    recalls = []
    for _ in range(10):
        query = dataset[rng.integers(COUNT)] + 0.1 * rng.standard_normal(DIMENSION).astype(np.float32)
        hits = await retriever.query(name, QuerySpec(vector=query, k=10, filter=node))
        assert len(hits) == 10
        assert all(hit.point.metadata["bucket100"] == 42 for hit in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        candidates = [i for i in range(COUNT) if i % 100 == 42]
        sims = dataset[candidates] @ (query / np.linalg.norm(query))
        truth = {f"p{candidates[j]:05d}" for j in np.argsort(-sims)[:10]}
        recalls.append(len(truth & {h.point.id for h in hits}) / 10)
    assert np.mean(recalls) >= (1.0 if exact_filter_max_rows else 0.9)


async def test_a_broad_filter_is_remembered_and_still_answered_correctly(stores, dataset) -> None:
    collections, points, retriever = stores
    name = await fill(collections, points, dataset)
    retriever = Retriever(points._db, PointStore(points._db, collections, replace(LIMITS, exact_filter_max_rows=50)))
    node = Filter(must=(FieldCondition("bucket10", "eq", 4),))  # 300 points match: broad
    for _ in range(2):  # the first probes and remembers; the second goes straight to the HNSW scan
        hits = await retriever.query(name, QuerySpec(vector=dataset[4], k=10, filter=node))
        assert len(hits) == 10 and all(h.point.metadata["bucket10"] == 4 for h in hits)
        assert hits[0].point.id == "p00004"
    assert len(retriever._broad_filters) == 1


async def test_unfiltered_exact_and_approximate_queries_agree(stores, dataset) -> None:
    collections, points, retriever = stores
    name = await fill(collections, points, dataset)
    query = dataset[17]
    exact = await retriever.query(name, QuerySpec(vector=query, k=5, exact=True))
    approximate = await retriever.query(name, QuerySpec(vector=query, k=5, ef_search=200))
    assert exact[0].point.id == "p00017" and exact[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.point.id for h in exact] == [h.point.id for h in approximate]
    threshold = await retriever.query(name, QuerySpec(vector=query, k=5, score_threshold=0.99))
    assert [h.point.id for h in threshold] == ["p00017"]


async def test_keyword_and_hybrid_search_use_the_text(stores, dataset) -> None:
    collections, points, retriever = stores
    name = await fill(collections, points, dataset)
    keyword = await retriever.query(name, QuerySpec(vector=None, text="number 1234", k=3))
    assert keyword[0].point.id == "p01234"
    # The vector points at p00017, the text at p01234: fusion ranks both on top.
    hybrid = await retriever.query(name, QuerySpec(vector=dataset[17], text="1234", k=5))
    assert {"p00017", "p01234"} <= {h.point.id for h in hybrid[:2]}
    filtered = await retriever.query(
        name,
        QuerySpec(vector=dataset[17], text="hotel", k=5, filter=Filter(must=(FieldCondition("color", "eq", "red"),))),
    )
    assert filtered and all(h.point.metadata["color"] == "red" for h in filtered)


async def test_half_precision_storage_round_trips_and_searches(stores, dataset) -> None:
    collections, points, retriever = stores
    name = await fill(collections, points, dataset, storage=Storage.FLOAT16)
    described = await collections.get(name)
    assert described.spec.storage is Storage.FLOAT16 and described.point_count == COUNT and described.index_ready
    hits = await retriever.query(name, QuerySpec(vector=dataset[99], k=1))
    assert hits[0].point.id == "p00099"
    got, _ = await points.get(name, ["p00099"], include_vectors=True)
    assert np.allclose(got[0].vector, dataset[99], atol=1e-3)


async def test_delete_by_filter_removes_only_matches_and_refuses_an_empty_filter(stores, dataset) -> None:
    collections, points, retriever = stores
    name = await fill(collections, points, dataset)
    deleted = await points.delete(name, [], Filter(must=(FieldCondition("bucket10", "eq", 0),)))
    assert deleted == COUNT // 10
    assert (await collections.get(name)).point_count == COUNT - COUNT // 10
    with pytest.raises(InvalidArgument):
        await points.delete(name, [], Filter())


@pytest.mark.parametrize(
    ("node", "fragment"),
    [
        (Filter(must=(Filter(must=(Filter(must=(Filter(must=(Filter(),)),)),)),)), "deeper than the limit"),
        (Filter(must=tuple(FieldCondition("a", "eq", i) for i in range(65))), "more than the limit of 64"),
        (Filter(must=(FieldCondition("a", "in", list(range(300))),)), "exceed the limit of 256"),
        (Filter(must=(FieldCondition("a..b", "eq", 1),)), "invalid filter key"),
        (Filter(must=(FieldCondition("a", "eq", {"x": 1}),)), "string, number or boolean"),
        (Filter(must=(FieldCondition("a", "range", {}),)), "at least one of gt"),
    ],
)
async def test_filter_guardrails_name_the_limit(stores, dataset, node: Filter, fragment: str) -> None:
    collections, points, retriever = stores
    name = f"guard_{uuid.uuid4().hex[:8]}"
    await collections.create(CollectionSpec(name=name, dimension=DIMENSION))
    with pytest.raises(InvalidArgument, match=fragment):
        await retriever.query(name, QuerySpec(vector=dataset[0], k=3, filter=node))


async def test_a_collection_dropped_elsewhere_is_not_found_even_when_cached(stores, dataset) -> None:
    collections, points, retriever = stores
    name = f"gone_{uuid.uuid4().hex[:8]}"
    await collections.create(CollectionSpec(name=name, dimension=DIMENSION))
    await retriever.query(name, QuerySpec(vector=dataset[0], k=1))  # now cached
    other = CollectionStore(points._db, 4000)  # another replica
    await other.delete(name)
    with pytest.raises(NotFound):
        await retriever.query(name, QuerySpec(vector=dataset[0], k=1))


async def test_listing_reads_one_tenants_collections_a_page_at_a_time(stores) -> None:
    """Tenant `t` sees only `t/...`; the default tenant ("") only bare names; and a tenant
    whose name prefixes another's (`t` and `t_2`, `_` being a LIKE wildcard) stays apart."""
    collections, points, _ = stores
    tenant = f"t{uuid.uuid4().hex[:6]}"
    mine = [f"{tenant}/c{i}" for i in range(5)]
    others = [f"{tenant}_2/c0", f"{tenant}x/c0", f"bare_{uuid.uuid4().hex[:6]}"]
    for name in (*mine, *others):
        await collections.create(CollectionSpec(name=name, dimension=DIMENSION))
    await points.upsert(mine[1], [Point("p", "text", {}, np.ones(DIMENSION, dtype=np.float32))], None)
    listed = await collections.list(tenant)
    assert [c.spec.name for c in listed] == mine
    assert [c.point_count for c in listed] == [0, 1, 0, 0, 0]
    page = await collections.list(tenant, after=mine[0], limit=2, counts=False)
    assert [c.spec.name for c in page] == mine[1:3] and page[0].point_count == 0
    bare = [c.spec.name for c in await collections.list("")]
    assert others[2] in bare and not any("/" in name for name in bare)
    with pytest.raises(InvalidArgument, match="tenant"):
        await collections.list("Bad%")


async def test_concurrent_migrations_apply_each_version_once(database_url: str) -> None:
    database = f"migrate_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute(f'CREATE DATABASE "{database}"')
    url = psycopg.conninfo.make_conninfo(database_url, dbname=database)

    async def run() -> int:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await migrate(conn)

    versions = await asyncio.gather(*(run() for _ in range(6)))
    assert len(set(versions)) == 1
    async with await psycopg.AsyncConnection.connect(url) as conn:
        rows = await (await conn.execute("SELECT version, count(*) FROM meshsearch_schema GROUP BY version")).fetchall()
    assert all(count == 1 for _, count in rows) and rows


@pytest.mark.parametrize("path", ["read", "transaction"])
async def test_statements_are_cut_off_at_the_callers_deadline(stores, path: str) -> None:
    import time

    from meshsearch_common import context
    from meshsearch_common.errors import DeadlineExceeded

    collections, points, retriever = stores
    token = context.deadline.set(time.monotonic() + 0.3)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded):
            session = points._db.read({}) if path == "read" else points._db.transaction()
            async with session as conn:
                await conn.execute("SELECT pg_sleep(5)")
    finally:
        context.deadline.reset(token)
    assert time.monotonic() - started < 1.5  # stopped by statement_timeout, not after 5 s
