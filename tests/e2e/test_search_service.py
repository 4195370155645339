"""The search service over gRPC: bulk loads, batch queries, filters, scroll and guardrails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack

DIMENSION = 8


def vector(values: np.ndarray) -> pb.Vector:
    return pb.Vector(data=values.astype("<f4").tobytes(), dimension=values.shape[0])


def point(i: int, rng: np.random.Generator, text: str = "") -> pb.Point:
    metadata = struct_pb2.Struct()
    metadata.update({"bucket": i % 4, "tags": ["even" if i % 2 == 0 else "odd"]})
    return pb.Point(
        id=f"id{i}", vector=vector(rng.standard_normal(DIMENSION)), text=text or f"text {i}", metadata=metadata
    )


def condition(key: str, **match: Any) -> pb.Condition:
    return pb.Condition(field=pb.FieldCondition(key=key, **match))


@pytest.fixture
async def store(stack: EmbeddedStack) -> AsyncIterator[tuple[search_pb2_grpc.VectorStoreServiceStub, str]]:
    name = f"svc_{uuid.uuid4().hex[:8]}"
    async with stack.channel("search") as channel:
        stub = search_pb2_grpc.VectorStoreServiceStub(channel)
        await stub.CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=name, dimension=DIMENSION))
        )
        yield stub, name


async def test_bulk_upsert_streams_batches_last_duplicate_wins_and_rebuilds_the_index(store) -> None:
    stub, name = store
    rng = np.random.default_rng(1)

    def batches():
        yield pb.BulkUpsertRequest(collection=name, points=[point(i, rng) for i in range(0, 500)])
        yield pb.BulkUpsertRequest(points=[point(i, rng) for i in range(500, 1000)])
        yield pb.BulkUpsertRequest(points=[point(7, rng, text="the second id7 wins")])

    response = await stub.BulkUpsert(batches(), timeout=120)
    assert response.upserted_count == 1000
    described = (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert described.point_count == 1000 and described.index_state == pb.INDEX_STATE_READY
    got = await stub.Get(pb.GetRequest(collection=name, ids=["id7"]))
    assert got.points[0].text == "the second id7 wins"


@pytest.mark.parametrize("storage", [pb.STORAGE_FLOAT32, pb.STORAGE_FLOAT16])
async def test_bulk_loaded_vectors_round_trip_exactly_for_both_storages(stack: EmbeddedStack, storage: int) -> None:
    name = f"bulkfmt_{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(5)
    values = rng.standard_normal((300, DIMENSION)).astype(np.float32)
    async with stack.channel("search") as channel:
        stub = search_pb2_grpc.VectorStoreServiceStub(channel)
        collection = pb.Collection(name=name, dimension=DIMENSION, storage=storage)  # type: ignore[arg-type]
        await stub.CreateCollection(pb.CreateCollectionRequest(collection=collection))
        for existing in (False, True):  # initial load (direct COPY), then a merge into a non-empty collection
            points = [pb.Point(id=f"v{i}", vector=vector(values[i] * (2 if existing else 1))) for i in range(300)]
            await stub.BulkUpsert(iter([pb.BulkUpsertRequest(collection=name, points=points)]))
            got = await stub.Get(pb.GetRequest(collection=name, ids=["v0", "v299"], include_vectors=True))
            stored = np.stack([np.frombuffer(p.vector.data, "<f4") for p in got.points])
            expected = values[[0, 299]] * (2 if existing else 1)
            assert np.allclose(stored, expected, atol=1e-6 if storage == pb.STORAGE_FLOAT32 else 1e-2)
        hits = await stub.Query(pb.QueryRequest(collection=name, vector=vector(values[42]), k=1))
        assert hits.points[0].point.id == "v42"


async def test_a_bulk_load_with_one_bad_point_writes_nothing(store) -> None:
    stub, name = store
    rng = np.random.default_rng(2)
    bad = pb.Point(id="bad", vector=vector(rng.standard_normal(DIMENSION + 1)))
    requests = [pb.BulkUpsertRequest(collection=name, points=[point(i, rng) for i in range(50)] + [bad])]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.BulkUpsert(iter(requests))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'bad'" in (raised.value.details() or "") and "nothing was written" in (raised.value.details() or "")
    described = (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert described.point_count == 0
    assert described.index_state == pb.INDEX_STATE_READY  # the index dropped for the load is back


async def test_bulk_upsert_into_a_non_empty_collection_merges_into_the_live_index(store) -> None:
    stub, name = store
    rng = np.random.default_rng(4)
    await stub.Upsert(pb.UpsertRequest(collection=name, points=[point(i, rng, text="original") for i in range(10)]))
    requests = [
        pb.BulkUpsertRequest(collection=name, points=[point(i, rng, text="bulk") for i in range(5, 30)]),
        pb.BulkUpsertRequest(points=[point(20, rng, text="last one wins")]),
    ]
    response = await stub.BulkUpsert(iter(requests))
    assert response.upserted_count == 25 and response.index_build_seconds == 0
    got = await stub.Get(pb.GetRequest(collection=name, ids=["id0", "id5", "id20"]))
    assert [p.text for p in got.points] == ["original", "bulk", "last one wins"]
    described = (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert described.point_count == 30 and described.index_state == pb.INDEX_STATE_READY


async def test_query_batch_filters_scroll_and_delete_by_filter(store) -> None:
    stub, name = store
    rng = np.random.default_rng(3)
    await stub.Upsert(pb.UpsertRequest(collection=name, points=[point(i, rng) for i in range(40)]))
    odd = pb.Filter(must=[condition("tags", eq=struct_pb2.Value(string_value="odd"))])
    queries = [
        pb.QueryRequest(collection=name, vector=vector(rng.standard_normal(DIMENSION)), k=5, filter=odd),
        pb.QueryRequest(collection=name, text="text 12", k=1),
    ]
    batch = await stub.QueryBatch(pb.QueryBatchRequest(queries=queries))
    assert len(batch.results) == 2
    assert len(batch.results[0].points) == 5
    assert all(int(p.point.id[2:]) % 2 == 1 for p in batch.results[0].points)
    assert batch.results[1].points[0].point.id == "id12"

    in_buckets = pb.Filter(
        must=[condition("bucket", **{"in": pb.ValueList(values=[struct_pb2.Value(number_value=1)])})]
    )
    first = await stub.Scroll(pb.ScrollRequest(collection=name, filter=in_buckets, limit=4))
    second = await stub.Scroll(pb.ScrollRequest(collection=name, filter=in_buckets, limit=4, cursor=first.next_cursor))
    third = await stub.Scroll(pb.ScrollRequest(collection=name, filter=in_buckets, limit=4, cursor=second.next_cursor))
    ids = [p.id for page in (first, second, third) for p in page.points]
    assert sorted(ids) == sorted(f"id{i}" for i in range(40) if i % 4 == 1) and third.next_cursor == ""

    deleted = await stub.Delete(pb.DeleteRequest(collection=name, filter=odd))
    assert deleted.deleted_count == 20
    assert (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection.point_count == 20


@pytest.mark.parametrize(
    ("make_request", "method", "fragment"),
    [
        (
            lambda n: pb.QueryRequest(collection=n, vector=vector(np.ones(DIMENSION)), k=0),
            "Query",
            "k 0 is out of range",
        ),
        (lambda n: pb.QueryRequest(collection=n, vector=vector(np.ones(DIMENSION)), k=5000), "Query", "1 to 1000"),
        (
            lambda n: pb.QueryRequest(collection=n, vector=vector(np.ones(DIMENSION)), k=5, ef_search=5000),
            "Query",
            "ef_search",
        ),
        (lambda n: pb.QueryRequest(collection=n, k=5), "Query", "needs a vector, a text"),
        (lambda n: pb.ScrollRequest(collection=n, cursor="%%%"), "Scroll", "cursor"),
        (lambda n: pb.DeleteRequest(collection=n), "Delete", "either ids or a non-empty filter"),
        (lambda n: pb.GetRequest(collection=n, ids=["x"] * 1001), "Get", "limit of 1000"),
        (
            lambda n: pb.QueryBatchRequest(queries=[pb.QueryRequest(collection=n, k=1, text="a")] * 65),
            "QueryBatch",
            "limit of 64",
        ),
        (
            lambda n: pb.BulkUpsertRequest(collection=n, points=[pb.Point(id="x")] * 1001),
            "BulkUpsert",
            "exceed the limit of 1000",
        ),
        (
            lambda n: pb.CreateCollectionRequest(
                collection=pb.Collection(name=n + "s", dimension=8, storage=7)  # type: ignore[arg-type]  # unknown
            ),
            "CreateCollection",
            "collection.storage 7 is not a known value",
        ),
        (
            lambda n: pb.QueryRequest(
                collection=n, vector=vector(np.ones(DIMENSION)), k=1, score_threshold=float("inf")
            ),
            "Query",
            "score_threshold must be a finite number",
        ),
        (
            lambda n: pb.CreateCollectionRequest(collection=pb.Collection(name=n + "x", dimension=3000)),
            "CreateCollection",
            "1 to 2000",
        ),
    ],
)
async def test_guardrails_answer_invalid_argument_naming_the_limit(
    store, make_request, method: str, fragment: str
) -> None:
    stub, name = store
    request = make_request(name)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        if method == "BulkUpsert":
            await stub.BulkUpsert(iter([request]), timeout=30)
        else:
            await getattr(stub, method)(request, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert fragment in (raised.value.details() or "")


async def test_a_message_over_the_size_limit_is_refused_while_it_is_read(store) -> None:
    """Over MESHSEARCH_SEARCH_MAX_REQUEST_BYTES gRPC refuses it from its length prefix, before
    reading it (see meshsearch_common.limits), naming both sizes."""
    stub, name = store
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Upsert(pb.UpsertRequest(collection=name, points=[pb.Point(id="x", text="y" * 33_600_000)]))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (raised.value.details() or "") and "33554432" in (raised.value.details() or "")


def columns(ids: list[str], values: np.ndarray, metadata: list[str] | None = None) -> pb.PointColumns:
    return pb.PointColumns(
        ids=ids,
        vectors=values.astype("<f4").tobytes(),
        dimension=values.shape[1],
        texts=[f"text of {i}" for i in ids],
        metadata_json=metadata or [],
    )


async def test_columnar_bulk_batches_load_texts_metadata_and_vectors(store) -> None:
    stub, name = store
    values = np.random.default_rng(6).standard_normal((100, DIMENSION)).astype(np.float32)
    ids = [f"c{i}" for i in range(100)]
    metadata = [f'{{"n": {i}, "even": {str(i % 2 == 0).lower()}}}' for i in range(100)]
    requests = [
        pb.BulkUpsertRequest(collection=name, columns=columns(ids[:60], values[:60], metadata[:60])),
        pb.BulkUpsertRequest(columns=columns(ids[60:], values[60:], metadata[60:])),
    ]
    assert (await stub.BulkUpsert(iter(requests))).upserted_count == 100
    got = await stub.Get(pb.GetRequest(collection=name, ids=["c73"], include_vectors=True))
    assert got.points[0].text == "text of c73" and got.points[0].metadata["n"] == 73
    assert np.allclose(np.frombuffer(got.points[0].vector.data, "<f4"), values[73])
    even = pb.Filter(must=[condition("even", eq=struct_pb2.Value(bool_value=True))])
    page = await stub.Scroll(pb.ScrollRequest(collection=name, filter=even, limit=100))
    assert len(page.points) == 50


@pytest.mark.parametrize(
    ("make_columns", "fragment"),
    [
        (
            lambda v: columns(["a", "b"], v[:2], ['{"ok": 1}', "[1, 2]"]),
            "point 1 (id 'b'): metadata_json is not a JSON object",
        ),
        (
            lambda v: columns(["a", "b"], v[:2], ['{"ok": 1}', "{broken"]),
            "point id 'b': invalid input syntax for type json",
        ),
        (
            lambda v: columns(["a", "b"], np.vstack([v[0], np.full(DIMENSION, np.nan)])),
            "point 1 (id 'b'): vector contains NaN",
        ),
        (lambda v: columns(["a", "b", "c"], v[:2]), "expected 4 * 3 ids * dimension"),
        (lambda v: columns(["a", "b"], v[:2], ["{}"]), "give one per id (2) or none"),
        (lambda v: columns(["a", "b"], np.ones((2, DIMENSION + 1))), "has dimension 9 but collection"),
    ],
)
async def test_malformed_columns_are_rejected_precisely_and_write_nothing(store, make_columns, fragment: str) -> None:
    stub, name = store
    values = np.random.default_rng(7).standard_normal((3, DIMENSION)).astype(np.float32)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.BulkUpsert(iter([pb.BulkUpsertRequest(collection=name, columns=make_columns(values))]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (raised.value.details() or "")
    assert (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection.point_count == 0


async def test_invalid_json_in_a_merge_into_a_non_empty_collection_names_the_point(store) -> None:
    stub, name = store
    values = np.random.default_rng(8).standard_normal((3, DIMENSION)).astype(np.float32)
    await stub.Upsert(pb.UpsertRequest(collection=name, points=[pb.Point(id="existing", vector=vector(values[0]))]))
    bad = columns(["x", "y", "z"], values, ['{"ok": true}', '{"ok": true}', '{"unterminated": '])
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.BulkUpsert(iter([pb.BulkUpsertRequest(collection=name, columns=bad)]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "point id 'z'" in (raised.value.details() or "")
    assert (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection.point_count == 1
