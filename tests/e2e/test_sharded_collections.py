"""Sharded collections on three embedded PostgreSQL servers (a coordinator and two shards),
through the real search service and the api: placement by PostgreSQL's hash partitioning,
searches merged by the coordinator equal to one server's (and planned to scan the shards at
once), exactly-once writes across a killed shard, an ingest job that resumes after kill -9 of a
shard, and a shard down named in UNAVAILABLE."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

import grpc
import numpy as np
import psycopg
import pytest
from google.protobuf import struct_pb2
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from meshsearch.api.v1 import api_pb2 as api_pb
from meshsearch.api.v1 import api_pb2_grpc as api_grpc
from meshsearch.client.uploads import upload
from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_search.collections import CollectionStore
from meshsearch_search.db import Database
from meshsearch_search.points import PointLimits, PointStore
from meshsearch_search.retrieval import QuerySpec, Retriever
from meshsearch_search.settings import SearchSettings
from tests.e2e.ingest_helpers import assert_stored_exactly_once, sentences, wait_job
from tests.integration.search_core import search_core

DIMENSION = 16
SHARDS = 2
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]

Stub = search_pb2_grpc.VectorStoreServiceStub
T = TypeVar("T")


@pytest.fixture
def sharded_stack(stack: EmbeddedStack) -> EmbeddedStack:
    """The session's stack: its search service has two shard servers."""
    assert len(stack.shard_urls) == SHARDS
    return stack


@pytest.fixture
async def stub(sharded_stack: EmbeddedStack) -> AsyncIterator[Stub]:
    async with sharded_stack.channel("search") as channel:
        yield Stub(channel)


def vector(values: np.ndarray) -> pb.Vector:
    return pb.Vector(data=values.astype("<f4").tobytes(), dimension=values.shape[0])


def points(count: int, seed: int = 7) -> list[pb.Point]:
    rng = np.random.default_rng(seed)
    made = []
    for i in range(count):
        metadata = struct_pb2.Struct()
        metadata.update({"bucket": i % 4})
        text = " ".join(WORDS[(i * j) % len(WORDS)] for j in range(1, 2 + i % 5))
        made.append(pb.Point(id=f"doc{i}", vector=vector(rng.standard_normal(DIMENSION)), text=text, metadata=metadata))
    return made


async def create(stub: Stub, shards: int) -> str:
    name = f"shd_{uuid.uuid4().hex[:8]}"
    await stub.CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=name, dimension=DIMENSION, shards=shards))
    )
    return name


async def load(stub: Stub, name: str, items: list[pb.Point], batch: int = 200) -> None:
    for start in range(0, len(items), batch):
        await stub.Upsert(pb.UpsertRequest(collection=name, points=items[start : start + batch]), timeout=60)


async def retried_while_unavailable(call: Callable[[], Awaitable[T]], attempts: int = 20) -> T:
    for _ in range(attempts - 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            await asyncio.sleep(0.5)
    return await call()


def assert_names_shard_1_only(details: str | None) -> None:
    """A status about a down shard names it by number; its address (host, port, database) is
    the operator's, not every caller's."""
    assert details and "shard 1" in details
    assert "127.0.0.1" not in details and "port" not in details and "meshsearch_shard_" not in details, details


def table_of(stack: EmbeddedStack, name: str) -> str:
    with psycopg.connect(stack.databases.search_url if stack.databases else stack.database_url) as conn:
        row = conn.execute("SELECT id FROM meshsearch_collections WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return f"meshsearch_points_{row[0]}"


def ids_on_shard(stack: EmbeddedStack, index: int, table: str) -> set[str]:
    with psycopg.connect(stack.shard_urls[index]) as conn:
        return {row[0] for row in conn.execute(f"SELECT id FROM {table} WHERE chunk = 0")}  # noqa: S608


async def test_points_are_placed_by_the_coordinators_hash_of_the_id(sharded_stack: EmbeddedStack, stub: Stub) -> None:
    name = await create(stub, SHARDS)
    await load(stub, name, points(400))
    described = (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert described.shards == SHARDS and described.point_count == 400
    assert described.index_state == pb.INDEX_STATE_READY
    table = table_of(sharded_stack, name)
    placed = [ids_on_shard(sharded_stack, index, table) for index in range(SHARDS)]
    assert placed[0].isdisjoint(placed[1]) and len(placed[0] | placed[1]) == 400
    assert min(len(ids) for ids in placed) > 120  # a hash spreads them, roughly evenly
    # Each id lies where the coordinator's own partitioning looks for it.
    with psycopg.connect(sharded_stack.databases.search_url if sharded_stack.databases else "") as conn:
        for index, ids in enumerate(placed):
            wrong = conn.execute(
                "SELECT count(*) FROM unnest(%s::text[]) d(id) "
                "WHERE NOT satisfies_hash_partition(%s::regclass::oid, %s, %s, d.id)",
                (sorted(ids), table, SHARDS, index),
            ).fetchone()
            assert wrong == (0,)


async def test_searches_match_one_server_holding_the_same_points(stub: Stub) -> None:
    """Vector recall, filters and BM25 keyword scores (global statistics) as on one server."""
    items = points(600, seed=11)
    sharded, single = await create(stub, SHARDS), await create(stub, 0)
    for name in (sharded, single):
        await load(stub, name, items)
    stored = np.stack([np.frombuffer(p.vector.data, "<f4") for p in items])
    rng = np.random.default_rng(5)
    recalls: dict[str, list[float]] = {sharded: [], single: []}
    for _ in range(20):
        query = rng.standard_normal(DIMENSION).astype(np.float32)
        norms = stored @ query / (np.linalg.norm(stored, axis=1) * np.linalg.norm(query))
        truth = {f"doc{i}" for i in np.argsort(-norms)[:10]}
        for name in (sharded, single):
            hits = (await stub.Query(pb.QueryRequest(collection=name, vector=vector(query), k=10))).points
            recalls[name].append(len(truth & {hit.point.id for hit in hits}) / 10)
    assert np.mean(recalls[sharded]) >= np.mean(recalls[single]) - 0.01
    assert np.mean(recalls[sharded]) >= 0.9
    # Exact search is exact on every shard: ordered by an expression their indexes cannot answer.
    exact = (await stub.Query(pb.QueryRequest(collection=sharded, vector=vector(query), k=10, exact=True))).points
    assert [hit.point.id for hit in exact] == [f"doc{i}" for i in np.argsort(-norms)[:10]]

    bucket = pb.Filter(must=[pb.Condition(field=pb.FieldCondition(key="bucket", eq=struct_pb2.Value(number_value=3)))])
    query = rng.standard_normal(DIMENSION).astype(np.float32)
    filtered = {
        name: (await stub.Query(pb.QueryRequest(collection=name, vector=vector(query), k=10, filter=bucket))).points
        for name in (sharded, single)
    }
    assert len(filtered[sharded]) == 10
    assert all(hit.point.metadata["bucket"] == 3 for hit in filtered[sharded])

    for text in ("alpha bravo", "golf hotel echo"):
        ranked = {
            name: (await stub.Query(pb.QueryRequest(collection=name, text=text, k=20))).points
            for name in (sharded, single)
        }
        assert [round(hit.score, 9) for hit in ranked[sharded]] == [round(hit.score, 9) for hit in ranked[single]]
        assert {hit.point.id for hit in ranked[sharded]} == {hit.point.id for hit in ranked[single]} or len(
            ranked[single]
        ) == 20

    hybrid = (await stub.Query(pb.QueryRequest(collection=sharded, vector=vector(query), text="delta", k=5))).points
    assert len(hybrid) == 5


async def test_a_querys_ef_search_reaches_the_shards_through_its_tier(sharded_stack: EmbeddedStack, stub: Stub) -> None:
    """postgres_fdw carries no session setting to a shard: a query asking for more than the
    shards' default ef_search (40) reads them through the foreign servers of the smallest tier at
    least as large (default tiers 100, 400, 1000), whose shard sessions start with it. A tier's
    tables are made with the collection, again on first use if missing (a collection older than
    the tier), and dropped with it."""
    items = points(600, seed=13)
    name = await create(stub, SHARDS)
    await load(stub, name, items)
    table = table_of(sharded_stack, name)
    coordinator = sharded_stack.databases.search_url if sharded_stack.databases else sharded_stack.database_url

    def tier_tables() -> set[str]:
        with psycopg.connect(coordinator) as conn:
            rows = conn.execute(
                "SELECT c.relname FROM pg_foreign_table f JOIN pg_class c ON c.oid = f.ftrelid WHERE c.relname ~ %s",
                (f"^{table}_s[0-9]+_ef[0-9]+$",),
            )
            return {row[0] for row in rows}

    assert tier_tables() == {f"{table}_s{index}_ef{tier}" for index in range(SHARDS) for tier in (100, 400, 1000)}
    with psycopg.connect(coordinator, autocommit=True) as conn:  # as if made before tier 400 was configured
        for index in range(SHARDS):
            conn.execute(sql.SQL("DROP FOREIGN TABLE {}").format(sql.Identifier(f"{table}_s{index}_ef400")))
    query = items[5].vector
    exact = (await stub.Query(pb.QueryRequest(collection=name, vector=query, k=10, exact=True))).points
    tiered = (await stub.Query(pb.QueryRequest(collection=name, vector=query, k=10, ef_search=300))).points
    # 300 points a shard, searched with ef_search 400: every candidate, so the exact answer.
    assert [hit.point.id for hit in tiered] == [hit.point.id for hit in exact]
    assert {f"{table}_s{index}_ef400" for index in range(SHARDS)} <= tier_tables()
    with psycopg.connect(coordinator) as conn:
        options = conn.execute(
            "SELECT srvoptions FROM pg_foreign_server WHERE srvname = 'meshsearch_shard_0_ef400'"
        ).fetchone()
    assert options is not None and any("hnsw.ef_search=400" in option for option in options[0])
    for admin_url in sharded_stack.shard_admin_urls:  # the query's sessions on each shard are the tier's
        with psycopg.connect(admin_url) as conn:
            sessions = {row[0] for row in conn.execute("SELECT application_name FROM pg_stat_activity")}
        assert "meshsearch-coordinator-ef400" in sessions
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name=name))
    assert tier_tables() == set()


async def test_a_shard_holding_every_best_row_is_asked_for_all_of_them(
    sharded_stack: EmbeddedStack, stub: Stub
) -> None:
    """Each shard first sends fewer rows than k (shards.per_shard_limit); when one shard holds
    all k best, the search notices and asks again, so none of them is missed. A hit on a later
    chunk of a document comes back with the document's text and metadata."""
    name = await create(stub, SHARDS)
    await load(stub, name, points(200, seed=13))
    on_first = sorted(ids_on_shard(sharded_stack, 0, table_of(sharded_stack, name)))[:10]
    rng = np.random.default_rng(17)
    query = rng.standard_normal(DIMENSION).astype(np.float32)
    near = [
        pb.Point(id=point_id, vector=vector(query + 0.01 * rng.standard_normal(DIMENSION)), text=f"near {point_id}")
        for point_id in on_first
    ]
    await load(stub, name, near)
    hits = (await stub.Query(pb.QueryRequest(collection=name, vector=vector(query), k=10))).points
    assert sorted(hit.point.id for hit in hits) == on_first
    assert all(hit.point.text == f"near {hit.point.id}" for hit in hits)

    text = "first part. second part. third part."
    metadata = struct_pb2.Struct()
    metadata.update({"kind": "chunked"})
    far = -query
    chunked = pb.Point(
        id="chunked",
        text=text,
        metadata=metadata,
        chunks=[
            pb.Chunk(vector=vector(rng.standard_normal(DIMENSION)), start=0, end=12),
            pb.Chunk(vector=vector(far), start=12, end=len(text)),
        ],
    )
    await load(stub, name, [chunked])
    best = (await stub.Query(pb.QueryRequest(collection=name, vector=vector(far), k=3))).points[0]
    assert (best.point.id, best.point.text, best.point.metadata["kind"]) == ("chunked", text, "chunked")
    assert (best.span.chunk, best.span.start, best.span.end) == (1, 12, len(text))


async def test_get_scroll_delete_and_drop_reach_every_shard(sharded_stack: EmbeddedStack, stub: Stub) -> None:
    name = await create(stub, SHARDS)
    await load(stub, name, points(100))
    got = await stub.Get(pb.GetRequest(collection=name, ids=["doc1", "doc2", "nope"]))
    assert sorted(p.id for p in got.points) == ["doc1", "doc2"] and list(got.missing_ids) == ["nope"]
    scrolled: list[str] = []
    cursor = ""
    while True:
        page = await stub.Scroll(pb.ScrollRequest(collection=name, limit=30, cursor=cursor))
        scrolled += [p.id for p in page.points]
        cursor = page.next_cursor
        if not cursor:
            break
    assert sorted(scrolled) == sorted(f"doc{i}" for i in range(100))
    deleted = await stub.Delete(pb.DeleteRequest(collection=name, ids=[f"doc{i}" for i in range(10)]))
    assert deleted.deleted_count == 10
    assert (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection.point_count == 90
    table = table_of(sharded_stack, name)
    await stub.DeleteCollection(pb.DeleteCollectionRequest(name=name))
    for index in range(SHARDS):
        with psycopg.connect(sharded_stack.shard_urls[index]) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)


async def test_refusals_are_precise(stub: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await create(stub, SHARDS + 1)
    assert too_many.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "MESHSEARCH_SEARCH_SHARD_URLS" in (too_many.value.details() or "")


async def test_bulk_loads_copy_into_every_shard_at_once_all_or_nothing(
    sharded_stack: EmbeddedStack, stub: Stub
) -> None:
    """An initial load (indexes rebuilt in the shards' transactions), a second load merged into
    the live indexes (the last duplicate wins), and a load with a bad point that writes nothing
    on any shard."""
    name = await create(stub, SHARDS)
    items = points(1000, seed=9)

    def stream(chunks: list[list[pb.Point]]) -> Iterator[pb.BulkUpsertRequest]:
        for index, chunk in enumerate(chunks):
            yield pb.BulkUpsertRequest(collection=name if index == 0 else "", points=chunk)

    first = await stub.BulkUpsert(stream([items[:400], items[400:800]]), timeout=120)
    assert first.upserted_count == 800 and first.index_build_seconds > 0
    renamed = pb.Point()
    renamed.CopyFrom(items[5])
    renamed.text = "the second doc5 wins"
    second = await stub.BulkUpsert(stream([items[800:], [renamed]]), timeout=120)
    assert second.upserted_count == 201
    described = (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert described.point_count == 1000 and described.index_state == pb.INDEX_STATE_READY
    got = await stub.Get(pb.GetRequest(collection=name, ids=["doc5"]))
    assert got.points[0].text == "the second doc5 wins"
    hits = (await stub.Query(pb.QueryRequest(collection=name, vector=items[700].vector, k=3))).points
    assert hits[0].point.id == "doc700"
    table = table_of(sharded_stack, name)
    before = [ids_on_shard(sharded_stack, index, table) for index in range(SHARDS)]
    assert all(len(ids) > 300 for ids in before)

    bad = pb.Point()
    bad.CopyFrom(items[0])
    bad.id, bad.vector.data, bad.vector.dimension = "bad", b"\0" * 8, 2
    fresh = points(1100, seed=10)[1000:]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.BulkUpsert(stream([fresh, [bad]]), timeout=120)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bad" in (refused.value.details() or "")
    assert [ids_on_shard(sharded_stack, index, table) for index in range(SHARDS)] == before


async def test_a_killed_shard_fails_fast_by_name_and_writes_land_exactly_once(
    sharded_stack: EmbeddedStack, stub: Stub
) -> None:
    name = await create(stub, SHARDS)
    items = points(300, seed=3)
    await load(stub, name, items[:100])
    on_first = ids_on_shard(sharded_stack, 0, table_of(sharded_stack, name))
    sharded_stack.kill("shard-1")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as down:
            await stub.Query(pb.QueryRequest(collection=name, vector=items[0].vector, k=5), timeout=20)
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE
        assert_names_shard_1_only(down.value.details())
        # A caller that allows partial results gets shard 0's best, with shard 1 named as missing.
        for asked in (
            pb.QueryRequest(collection=name, vector=items[0].vector, k=5),
            pb.QueryRequest(collection=name, text="alpha bravo", k=5),
            pb.QueryRequest(collection=name, vector=items[0].vector, text="alpha", k=5),
        ):
            asked.allow_partial_results = True
            partial = await stub.Query(asked, timeout=20)
            assert len(partial.points) == 5 and {hit.point.id for hit in partial.points} <= on_first
            assert len(partial.unavailable_shards) == 1 and "shard 1" in partial.unavailable_shards[0]
        with pytest.raises(grpc.aio.AioRpcError) as counted:  # its counters are on the shards too
            await stub.GetCollection(pb.GetCollectionRequest(name=name), timeout=20)
        assert counted.value.code() == grpc.StatusCode.UNAVAILABLE
        assert_names_shard_1_only(counted.value.details())
        with pytest.raises(grpc.aio.AioRpcError) as listed:  # so is a listing with counts...
            await stub.ListCollections(pb.ListCollectionsRequest(), timeout=20)
        assert listed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert_names_shard_1_only(listed.value.details())
        uncounted = await stub.ListCollections(pb.ListCollectionsRequest(skip_counts=True), timeout=20)
        assert name in {collection.name for collection in uncounted.collections}  # ...but not one without
        # A receipted batch while shard 1 is down: shard 0 applies its part, the call fails.
        with pytest.raises(grpc.aio.AioRpcError) as write:
            await stub.Upsert(pb.UpsertRequest(collection=name, points=items[100:300], receipt="job1/b1"), timeout=20)
        assert write.value.code() == grpc.StatusCode.UNAVAILABLE
        assert_names_shard_1_only(write.value.details())
    finally:
        sharded_stack.restart("shard-1")
    # Connections that shard's restart broke fail one call each (UNAVAILABLE), which callers retry.
    receipts = await retried_while_unavailable(
        lambda: stub.GetReceipts(pb.GetReceiptsRequest(collection=name, receipts=["job1/b1"]), timeout=30)
    )
    assert list(receipts.recorded) == []  # not on every shard: not applied
    retried = await stub.Upsert(pb.UpsertRequest(collection=name, points=items[100:300], receipt="job1/b1"), timeout=30)
    assert not retried.already_applied
    again = await stub.Upsert(pb.UpsertRequest(collection=name, points=items[100:300], receipt="job1/b1"), timeout=30)
    assert again.already_applied
    described = (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert described.point_count == 300
    receipts = await stub.GetReceipts(pb.GetReceiptsRequest(collection=name, receipts=["job1/b1"]))
    assert list(receipts.recorded) == ["job1/b1"]


async def test_the_api_answers_partial_results_marked_degraded_when_asked(sharded_stack: EmbeddedStack) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sharded_stack.ports.api}") as channel:
        name = f"shd_partial_{uuid.uuid4().hex[:6]}"
        await api_grpc.CollectionServiceStub(channel).CreateCollection(
            api_pb.CreateCollectionRequest(collection=api_pb.Collection(name=name, shards=SHARDS)), timeout=30
        )
        documents = sentences(40, salt="partial-")
        await api_grpc.DocumentServiceStub(channel).IndexDocuments(
            api_pb.IndexDocumentsRequest(collection=name, documents=documents), timeout=120
        )
        on_first = ids_on_shard(sharded_stack, 0, table_of(sharded_stack, name))
        search = api_grpc.SearchServiceStub(channel)
        sharded_stack.kill("shard-1")
        try:
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await search.Search(api_pb.SearchRequest(collection=name, query=documents[0].text), timeout=30)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE
            assert_names_shard_1_only(down.value.details())
            answer = await search.Search(
                api_pb.SearchRequest(collection=name, query=documents[0].text, top_k=5, allow_partial_results=True),
                timeout=30,
            )
            assert answer.degraded and "shard 1" in answer.degraded_reason
            assert answer.mode == api_pb.SEARCH_MODE_VECTOR
            assert len(answer.hits) == 5 and {hit.document.id for hit in answer.hits} <= on_first
        finally:
            sharded_stack.restart("shard-1")
        # The search service's connections to shard 1 broke: the first write through one fails,
        # and the pool then replaces every broken one at once.
        again = api_pb.IndexDocumentsRequest(collection=name, documents=documents)  # on both shards
        await retried_while_unavailable(lambda: api_grpc.DocumentServiceStub(channel).IndexDocuments(again, timeout=60))


class _ExplainingDatabase(Database):
    """Reads whose plans the coordinator sends back as notices (auto_explain), as executed."""

    plans: list[str]

    @asynccontextmanager
    async def read(self, settings: Mapping[str, str]) -> AsyncIterator[psycopg.AsyncConnection]:
        async with super().read(settings) as conn:

            def keep(notice: psycopg.errors.Diagnostic) -> None:
                self.plans.append(notice.message_primary or "")

            conn.add_notice_handler(keep)
            await conn.execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; SET auto_explain.log_verbose = on; "
                "SET auto_explain.log_level = notice"
            )
            yield conn
            conn.remove_notice_handler(keep)
            await conn.execute("SET auto_explain.log_min_duration = -1")


async def test_the_coordinator_asks_each_shard_for_its_own_top_k_at_once(
    sharded_stack: EmbeddedStack, stub: Stub
) -> None:
    """The plans of the service's own statements: every shard gets ORDER BY … LIMIT (its HNSW
    index answers it) and the shards are scanned asynchronously, not one after another."""
    name = await create(stub, SHARDS)
    await load(stub, name, points(300))
    # As the superuser, who may load auto_explain, in the search service's database.
    url = make_conninfo(sharded_stack.database_url, dbname="meshsearch_search")
    with psycopg.connect(url, autocommit=True) as conn:  # the superuser reaches the shards as the service does
        for index, shard_url in enumerate(sharded_stack.shard_urls):
            login = conninfo_to_dict(shard_url)
            conn.execute(
                sql.SQL(
                    "CREATE USER MAPPING IF NOT EXISTS FOR CURRENT_USER SERVER {} OPTIONS (user {}, password {})"
                ).format(
                    sql.Identifier(f"meshsearch_shard_{index}"),
                    sql.Literal(login["user"]),
                    sql.Literal(login["password"]),
                )
            )
    limits = PointLimits.from_settings(SearchSettings())
    async with search_core(url, limits) as core:
        db = _ExplainingDatabase(core.db.write_pool, core.db.read_pool)
        db.plans = []
        retriever = Retriever(db, PointStore(db, CollectionStore(db, 4000), limits))
        query = np.frombuffer(points(1)[0].vector.data, "<f4")
        assert len(await retriever.query(name, QuerySpec(vector=query, k=10))) == 10
        assert len(await retriever.query(name, QuerySpec(vector=None, text="alpha golf", k=10))) == 10
        assert len(await retriever.query(name, QuerySpec(vector=query, k=10, exact=True))) == 10
    plans = [plan for plan in db.plans if "Foreign Scan" in plan]
    nearest, keyword, exact = plans
    # Exact: each shard orders by an expression its HNSW index cannot answer, so it scans its rows.
    ordered = [line for line in exact.splitlines() if "Remote SQL" in line and "ORDER BY" in line]
    assert len(ordered) == SHARDS and all(
        re.search(r"\) \+ '?0'?(::\w+( \w+)?)?\) ASC.* LIMIT \d+", line) for line in ordered
    )
    assert nearest.count("Async Foreign Scan") >= 2 * SHARDS and "Merge Append" not in nearest
    remote = [line for line in nearest.splitlines() if "Remote SQL" in line and "ORDER BY" in line]
    assert len(remote) == SHARDS and all(re.search(r"LIMIT \d+::bigint$", line) for line in remote)
    assert "lexeme = ANY" in keyword and keyword.count("Async Foreign Scan") >= SHARDS


async def test_an_ingest_job_into_a_sharded_collection_survives_kill_9_of_a_shard(sharded_stack: EmbeddedStack) -> None:
    """Through the api: the job's batches fail while shard 1 is gone, are retried by the worker,
    and once it is back every document is stored exactly once, spread over both shards."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sharded_stack.ports.api}") as channel:
        name = f"shd_job_{uuid.uuid4().hex[:6]}"
        await api_grpc.CollectionServiceStub(channel).CreateCollection(
            api_pb.CreateCollectionRequest(collection=api_pb.Collection(name=name, shards=SHARDS)), timeout=30
        )
        documents = sentences(1500, salt="shd-")
        result = await upload(channel, documents, collection=name)
        before = await wait_job(channel, result.job_id, timeout_s=300, until_done=200)
        sharded_stack.kill("shard-1")
        assert before.done < 1500  # killed mid-job
        await asyncio.sleep(2)
        sharded_stack.restart("shard-1")
        job = await wait_job(channel, result.job_id, timeout_s=600)
        assert (job.state, job.done, job.failed) == (api_pb.JOB_STATE_COMPLETED, 1500, 0), job
        await assert_stored_exactly_once(channel, name, documents)
        described = (
            await api_grpc.CollectionServiceStub(channel).GetCollection(api_pb.GetCollectionRequest(name=name))
        ).collection
        assert described.shards == SHARDS
    table = table_of(sharded_stack, name)
    assert all(len(ids_on_shard(sharded_stack, index, table)) > 500 for index in range(SHARDS))
