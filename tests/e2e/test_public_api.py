"""The public contract through the real mesh (api -> embedder -> search on PostgreSQL): search
modes, filters, long documents, paging, batch search, and errors a client in any language can
act on (standard details on every status)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.client import error_details
from meshsearch_cli.stack import EmbeddedStack
from tests.e2e.clients import ApiClient
from tests.e2e.scrape import embed_calls

UNDEFINED_MODE: Any = 9  # a number a newer client could send; this contract does not define it
LONG_TEXT = (
    "Photosynthesis converts light into chemical energy in the chloroplasts of plant cells. "
    "The light reactions split water and release oxygen, while the Calvin cycle fixes carbon dioxide. "
    "Many unrelated sentences follow to make this document longer than one small chunk of tokens. "
    "Finally, the migration of monarch butterflies spans thousands of kilometres across North America."
)


@pytest.fixture
async def api(stack: EmbeddedStack) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as channel:
        yield ApiClient(channel)


def meta(**values: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def color_is(color: str) -> pb.Filter:
    value = struct_pb2.Value(string_value=color)
    return pb.Filter(must=[pb.Condition(field=pb.FieldCondition(key="color", eq=value))])


async def create(api: ApiClient, **fields: Any) -> str:
    name = f"api_{uuid.uuid4().hex[:8]}"
    await api.collections.CreateCollection(
        pb.CreateCollectionRequest(collection=pb.Collection(name=name, **fields)), timeout=30
    )
    return name


async def test_long_documents_are_chunked_on_tokens_and_found_by_their_best_chunk(api: ApiClient) -> None:
    name = await create(api, chunking=pb.Chunking(chunk_tokens=24, overlap_tokens=4))
    described = (await api.collections.GetCollection(pb.GetCollectionRequest(name=name), timeout=10)).collection
    assert (described.chunking.chunk_tokens, described.chunking.overlap_tokens) == (24, 4)
    await api.index(name, {"long": LONG_TEXT, "short": "Bees make honey from nectar."})
    response = await api.search.Search(
        pb.SearchRequest(collection=name, query="monarch butterfly migration", top_k=2), timeout=30
    )
    best = response.hits[0]
    assert best.document.id == "long" and best.document.text == LONG_TEXT
    assert best.chunk.index > 0, "the match is in the last part, past the first chunk"
    assert "monarch" in LONG_TEXT[best.chunk.start : best.chunk.end]
    # Re-indexed short, the document is one chunk again; deleted, it is gone with all chunks.
    await api.index(name, {"long": "Monarch butterflies migrate."})
    again = await api.search.Search(pb.SearchRequest(collection=name, query="monarch butterfly migration"), timeout=30)
    assert again.hits[0].document.id == "long" and again.hits[0].chunk.index == 0
    deleted = await api.documents.DeleteDocuments(pb.DeleteDocumentsRequest(collection=name, ids=["long"]), timeout=10)
    assert deleted.deleted_count == 1
    left = await api.search.Search(pb.SearchRequest(collection=name, query="monarch butterfly migration"), timeout=30)
    assert [hit.document.id for hit in left.hits] == ["short"]


async def test_modes_filters_field_choice_and_batches(api: ApiClient) -> None:
    name = await create(api, storage=pb.STORAGE_FLOAT16, hnsw=pb.HnswParams(m=8, ef_construction=32))
    described = (await api.collections.GetCollection(pb.GetCollectionRequest(name=name), timeout=10)).collection
    assert described.storage == pb.STORAGE_FLOAT16
    texts = {
        "d1": ("Insulin resistance develops in obese mice fed a high fat diet.", "red"),
        "d2": ("Tumour suppressor genes restrain cell division.", "blue"),
        "d3": ("Glucose uptake by muscle depends on insulin signalling.", "blue"),
        "d4": ("Migratory birds navigate using the magnetic field.", "red"),
    }
    request = pb.IndexDocumentsRequest(
        collection=name,
        documents=[pb.Document(id=i, text=t, metadata=meta(color=c)) for i, (t, c) in texts.items()],
    )
    assert (await api.documents.IndexDocuments(request, timeout=60)).indexed_count == 4

    async def ids(**fields: Any) -> list[str]:
        response = await api.search.Search(pb.SearchRequest(collection=name, **fields), timeout=30)
        assert not response.degraded
        return [hit.document.id for hit in response.hits]

    assert (await ids(query="insulin", mode=pb.SEARCH_MODE_KEYWORD))[:2] in (["d1", "d3"], ["d3", "d1"])
    assert await ids(query="which genes stop cells dividing?", top_k=1) == ["d2"]
    assert (await ids(query="insulin in muscle", mode=pb.SEARCH_MODE_HYBRID, top_k=1)) == ["d3"]
    assert set(await ids(query="insulin", filter=color_is("blue"), exact=True)) == {"d2", "d3"}
    bare = await api.search.Search(
        pb.SearchRequest(collection=name, query="birds", include_text=False, include_metadata=False, top_k=1),
        timeout=30,
    )
    assert bare.hits[0].document.id == "d4" and not bare.hits[0].document.text
    assert not bare.hits[0].document.metadata.fields

    batch = await api.search.SearchBatch(
        pb.SearchBatchRequest(
            searches=[
                pb.SearchRequest(collection=name, query="birds navigate", top_k=1),
                pb.SearchRequest(collection=name, query="tumour", top_k=1, mode=pb.SEARCH_MODE_KEYWORD),
            ]
        ),
        timeout=30,
    )
    assert [r.hits[0].document.id for r in batch.results] == ["d4", "d2"]

    seen, token = [], ""
    while True:
        page = await api.documents.ListDocuments(
            pb.ListDocumentsRequest(collection=name, page_size=3, page_token=token), timeout=10
        )
        seen += [d.id for d in page.documents]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["d1", "d2", "d3", "d4"]
    blue = await api.documents.ListDocuments(
        pb.ListDocumentsRequest(collection=name, filter=color_is("blue")), timeout=10
    )
    assert [d.id for d in blue.documents] == ["d2", "d3"] and not blue.next_page_token
    removed = await api.documents.DeleteDocuments(
        pb.DeleteDocumentsRequest(collection=name, filter=color_is("red")), timeout=10
    )
    assert removed.deleted_count == 2
    assert (
        await api.collections.GetCollection(pb.GetCollectionRequest(name=name), timeout=10)
    ).collection.document_count == 2


async def test_list_collections_pages_without_repeats(api: ApiClient) -> None:
    for _ in range(3):
        await create(api)
    names, token = [], ""
    while True:
        page = await api.collections.ListCollections(
            pb.ListCollectionsRequest(page_size=2, page_token=token), timeout=10
        )
        assert len(page.collections) <= 2
        names += [c.name for c in page.collections]
        token = page.next_page_token
        if not token:
            break
    assert names == sorted(set(names)) and len(names) >= 3


@pytest.mark.parametrize(
    ("method", "request_factory", "field"),
    [
        (
            "CreateCollection",
            lambda n: pb.CreateCollectionRequest(collection=pb.Collection(name="")),
            "collection.name",
        ),
        (
            "CreateCollection",
            lambda n: pb.CreateCollectionRequest(
                collection=pb.Collection(name=n + "x", chunking=pb.Chunking(chunk_tokens=10_000))
            ),
            "collection.chunking.chunk_tokens",
        ),
        ("GetCollection", lambda n: pb.GetCollectionRequest(name=""), "name"),
        ("ListCollections", lambda n: pb.ListCollectionsRequest(page_size=5000), "page_size"),
        ("DeleteCollection", lambda n: pb.DeleteCollectionRequest(name=""), "name"),
        ("IndexDocuments", lambda n: pb.IndexDocumentsRequest(collection=n), "documents"),
        ("GetDocuments", lambda n: pb.GetDocumentsRequest(collection=n), "ids"),
        ("DeleteDocuments", lambda n: pb.DeleteDocumentsRequest(collection=n), "ids"),
        ("ListDocuments", lambda n: pb.ListDocumentsRequest(collection=n, page_size=5000), "page_size"),
        ("ListDocuments", lambda n: pb.ListDocumentsRequest(collection=n, page_token="not-a-token!"), "page_token"),
        ("ListCollections", lambda n: pb.ListCollectionsRequest(page_token="%%%"), "page_token"),
        ("Search", lambda n: pb.SearchRequest(collection=n, query=" "), "query"),
        ("Search", lambda n: pb.SearchRequest(collection=n, query="x", mode=UNDEFINED_MODE), "mode"),
        ("Search", lambda n: pb.SearchRequest(collection=n, query="x", top_k=10_000), "top_k"),
        ("Search", lambda n: pb.SearchRequest(collection=n, query="x", ef_search=10_000), "ef_search"),
        (
            "Search",
            lambda n: pb.SearchRequest(
                collection=n, query="x", filter=pb.Filter(must=[pb.Condition(field=pb.FieldCondition(key="k"))])
            ),
            "filter",
        ),
        (
            "SearchBatch",
            lambda n: pb.SearchBatchRequest(searches=[pb.SearchRequest(collection=n, query="ok"), pb.SearchRequest()]),
            "searches[1].collection",
        ),
    ],
)
async def test_bad_input_gets_invalid_argument_naming_the_field(
    api: ApiClient, method: str, request_factory: Any, field: str
) -> None:
    name = await create(api)
    stub = {
        "CreateCollection": api.collections,
        "GetCollection": api.collections,
        "ListCollections": api.collections,
        "DeleteCollection": api.collections,
        "Search": api.search,
        "SearchBatch": api.search,
    }.get(method, api.documents)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, method)(request_factory(name), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    details = error_details(raised.value)
    assert details["BadRequest"].field_violations[0].field == field
    assert details["BadRequest"].field_violations[0].description == raised.value.details()
    assert details["ErrorInfo"].reason == "INVALID_ARGUMENT" and details["ErrorInfo"].domain == "meshsearch.io"


async def test_unknown_collections_get_not_found_with_error_info(api: ApiClient) -> None:
    missing = f"missing_{uuid.uuid4().hex[:8]}"
    calls = [
        api.collections.GetCollection(pb.GetCollectionRequest(name=missing), timeout=10),
        api.documents.GetDocuments(pb.GetDocumentsRequest(collection=missing, ids=["a"]), timeout=10),
        api.documents.ListDocuments(pb.ListDocumentsRequest(collection=missing), timeout=10),
        api.search.Search(pb.SearchRequest(collection=missing, query="x"), timeout=10),
        api.search.Search(pb.SearchRequest(collection=missing, query="x", mode=pb.SEARCH_MODE_KEYWORD), timeout=10),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        assert error_details(raised.value)["ErrorInfo"].reason == "NOT_FOUND"


async def test_a_retried_write_with_its_request_key_is_answered_without_redoing_the_work(
    api: ApiClient, stack: EmbeddedStack
) -> None:
    name = await create(api)
    key = str(uuid.uuid4())
    request = pb.IndexDocumentsRequest(
        collection=name,
        request_key=key,
        documents=[pb.Document(id=f"k{i}", text=f"keyed text {i} {uuid.uuid4().hex}") for i in range(3)],
    )
    before = embed_calls(stack.ports.embedder_metrics)
    # Three copies at once (a client retrying while the first is still running) and one after.
    answers = await asyncio.gather(*(api.documents.IndexDocuments(request, timeout=60) for _ in range(3)))
    answers.append(await api.documents.IndexDocuments(request, timeout=60))
    assert all(a == answers[0] for a in answers) and answers[0].indexed_count == 3
    assert embed_calls(stack.ports.embedder_metrics) - before == 1, "the keyed work ran more than once"

    changed = pb.IndexDocumentsRequest(collection=name, request_key=key, documents=[pb.Document(id="x", text="other")])
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await api.documents.IndexDocuments(changed, timeout=30)
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(reused.value)["BadRequest"].field_violations[0].field == "request_key"
