"""The search service over gRPC: bulk loads, batch queries, filters, scroll and guardrails."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_common.cli.stack import EmbeddedStack

DIMENSION = 8


def vector(values: np.ndarray) -> pb.Vector:
    return pb.Vector(data=values.astype("<f4").tobytes(), dimension=values.shape[0])


def point(i: int, rng: np.random.Generator, text: str = "") -> pb.Point:
    metadata = struct_pb2.Struct()
    metadata.update({"bucket": i % 4, "tags": ["even" if i % 2 == 0 else "odd"]})
    return pb.Point(
        id=f"id{i}", vector=vector(rng.standard_normal(DIMENSION)), text=text or f"text {i}", metadata=metadata
    )


def condition(key: str, **match: object) -> pb.Condition:
    return pb.Condition(field=pb.FieldCondition(key=key, **match))


@pytest.fixture
async def store(stack: EmbeddedStack) -> AsyncIterator[tuple[search_pb2_grpc.VectorStoreServiceStub, str]]:
    name = f"svc_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.search}") as channel:
        stub = search_pb2_grpc.VectorStoreServiceStub(channel)
        await stub.CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=name, dimension=DIMENSION))
        )
        yield stub, name


async def test_bulk_upsert_streams_batches_last_duplicate_wins_and_rebuilds_the_index(store) -> None:  # type: ignore[no-untyped-def]
    stub, name = store
    rng = np.random.default_rng(1)

    def batches():  # type: ignore[no-untyped-def]
        yield pb.BulkUpsertRequest(collection=name, points=[point(i, rng) for i in range(0, 500)])
        yield pb.BulkUpsertRequest(points=[point(i, rng) for i in range(500, 1000)])
        yield pb.BulkUpsertRequest(points=[point(7, rng, text="the second id7 wins")])

    response = await stub.BulkUpsert(batches(), timeout=120)
    assert response.upserted_count == 1000
    described = (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection
    assert described.point_count == 1000 and described.index_state == pb.INDEX_STATE_READY
    got = await stub.Get(pb.GetRequest(collection=name, ids=["id7"]))
    assert got.points[0].text == "the second id7 wins"


async def test_a_bulk_load_with_one_bad_point_writes_nothing(store) -> None:  # type: ignore[no-untyped-def]
    stub, name = store
    rng = np.random.default_rng(2)
    bad = pb.Point(id="bad", vector=vector(rng.standard_normal(DIMENSION + 1)))
    requests = [pb.BulkUpsertRequest(collection=name, points=[point(i, rng) for i in range(50)] + [bad])]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.BulkUpsert(iter(requests))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'bad'" in raised.value.details() and "nothing was written" in raised.value.details()
    assert (await stub.GetCollection(pb.GetCollectionRequest(name=name))).collection.point_count == 0


async def test_query_batch_filters_scroll_and_delete_by_filter(store) -> None:  # type: ignore[no-untyped-def]
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
            lambda n: pb.UpsertRequest(collection=n, points=[pb.Point(id="x", text="y" * 33_600_000)]),
            "Upsert",
            "limit of 33554432 bytes",
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
) -> None:  # type: ignore[no-untyped-def]
    stub, name = store
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, method)(make_request(name), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert fragment in raised.value.details()
