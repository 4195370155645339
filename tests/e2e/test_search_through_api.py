"""End to end through the public api: real model, real pgvector, real Redis, three processes."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import struct_pb2

from meshsearch.api.v1 import api_pb2 as pb
from tests.e2e.clients import ApiClient, status_of

PETS = {
    "cats": "Cats are small domesticated felines that purr and often sleep most of the day.",
    "rust": "Rust is a systems programming language focused on memory safety without a garbage collector.",
    "bread": "To bake bread, knead flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
    "tides": "Ocean tides are caused mainly by the gravitational pull of the Moon on the Earth's oceans.",
    "tax": "A value added tax is charged at each stage of production on the value the stage adds.",
}


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_a_paraphrased_query_ranks_the_right_document_first(api: ApiClient) -> None:
    name = unique_name("para")
    collection = await api.create(name)
    assert collection.model.id == "sentence-transformers/all-MiniLM-L6-v2"
    assert collection.model.dimension == 384
    response = await api.index(name, PETS)
    assert response.indexed_count == len(PETS) and not response.errors
    expectations = {
        "why does the sea level rise and fall twice a day": "tides",
        "a language that prevents memory bugs without garbage collection": "rust",
        "how do I make a loaf at home": "bread",
        "which pets nap a lot and purr": "cats",
    }
    for query, expected in expectations.items():
        hits = await api.query(name, query)
        assert hits[0].document.id == expected, (query, [(h.document.id, h.score) for h in hits])
        assert hits[0].score > hits[1].score


async def test_documents_round_trip_with_metadata_and_can_be_deleted(api: ApiClient) -> None:
    name = unique_name("docs")
    await api.create(name)
    metadata = struct_pb2.Struct()
    metadata.update({"lang": "en", "year": 2024})
    await api.documents.IndexDocuments(
        pb.IndexDocumentsRequest(collection=name, documents=[pb.Document(id="a", text="alpha text", metadata=metadata)])
    )
    got = await api.documents.GetDocuments(pb.GetDocumentsRequest(collection=name, ids=["a", "zzz"]))
    assert [d.id for d in got.documents] == ["a"] and list(got.missing_ids) == ["zzz"]
    assert got.documents[0].metadata["lang"] == "en"
    # Indexing the same id again replaces the document (idempotent by id).
    await api.index(name, {"a": "alpha text, revised"})
    described = await api.collections.GetCollection(pb.GetCollectionRequest(name=name))
    assert described.collection.document_count == 1
    deleted = await api.documents.DeleteDocuments(pb.DeleteDocumentsRequest(collection=name, ids=["a", "zzz"]))
    assert deleted.deleted_count == 1
    listed = await api.collections.ListCollections(pb.ListCollectionsRequest())
    assert name in [c.name for c in listed.collections]
    await api.collections.DeleteCollection(pb.DeleteCollectionRequest(name=name))
    assert (
        await status_of(api.collections.GetCollection(pb.GetCollectionRequest(name=name))) == grpc.StatusCode.NOT_FOUND
    )


async def test_invalid_documents_are_reported_per_item_and_the_rest_are_stored(api: ApiClient) -> None:
    name = unique_name("items")
    await api.create(name)
    response = await api.documents.IndexDocuments(
        pb.IndexDocumentsRequest(
            collection=name,
            documents=[
                pb.Document(id="ok", text="a fine document"),
                pb.Document(id="blank", text="   "),
                pb.Document(id="", text="no id"),
            ],
        )
    )
    assert response.indexed_count == 1
    assert [(e.index, e.id, e.code) for e in response.errors] == [(1, "blank", 3), (2, "", 3)]
    assert "empty" in response.errors[0].message


@pytest.mark.parametrize(
    ("request_factory", "expected"),
    [
        (lambda c: ("Search", pb.SearchRequest(collection=c, query="")), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda c: ("Search", pb.SearchRequest(collection=c, query="x", top_k=100000)),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (lambda c: ("Search", pb.SearchRequest(collection="no_such_collection", query="x")), grpc.StatusCode.NOT_FOUND),
        (
            lambda c: (
                "IndexDocuments",
                pb.IndexDocumentsRequest(collection="no_such_collection", documents=[pb.Document(id="a", text="b")]),
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (lambda c: ("IndexDocuments", pb.IndexDocumentsRequest(collection=c)), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda c: ("CreateCollection", pb.CreateCollectionRequest(collection=pb.Collection(name="Bad Name!"))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda c: ("CreateCollection", pb.CreateCollectionRequest(collection=pb.Collection(name=c))),
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        (lambda c: ("GetCollection", pb.GetCollectionRequest(name="")), grpc.StatusCode.INVALID_ARGUMENT),
        (
            lambda c: (
                "CreateCollection",
                pb.CreateCollectionRequest(collection=pb.Collection(name=c + "m", metric=99)),  # type: ignore[arg-type]
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            lambda c: ("Search", pb.SearchRequest(collection=c, query="x", score_threshold=float("nan"))),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_bad_input_gets_a_precise_status(api: ApiClient, request_factory, expected: grpc.StatusCode) -> None:
    name = unique_name("bad")
    await api.create(name)
    method, request = request_factory(name)
    stub = {"Search": api.search, "IndexDocuments": api.documents}.get(method, api.collections)
    try:
        await getattr(stub, method)(request, timeout=30)
    except grpc.aio.AioRpcError as error:
        assert error.code() == expected, error.details()
        assert error.details()  # a message a caller can act on
    else:
        pytest.fail(f"{method} succeeded; expected {expected}")
