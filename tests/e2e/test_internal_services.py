"""The internal contracts, called directly: bad input, reflection, health, metrics, request ids."""

from __future__ import annotations

import urllib.request
import uuid

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from meshsearch.api.v1 import api_pb2 as api_pb
from meshsearch.embedder.v1 import embedder_pb2 as epb
from meshsearch.embedder.v1 import embedder_pb2_grpc
from meshsearch.search.v1 import search_pb2 as spb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_common.callers import operator_channel
from tests import waiting
from tests.e2e.clients import ApiClient


def vector(dimension: int) -> spb.Vector:
    values = np.random.default_rng(0).standard_normal(dimension).astype("<f4")
    return spb.Vector(data=values.tobytes(), dimension=dimension)


async def test_a_vector_of_the_wrong_dimension_sent_to_search_is_invalid(stack: EmbeddedStack) -> None:
    name = f"dims_{uuid.uuid4().hex[:8]}"
    async with stack.channel("search") as channel:
        stub = search_pb2_grpc.VectorStoreServiceStub(channel)
        await stub.CreateCollection(spb.CreateCollectionRequest(collection=spb.Collection(name=name, dimension=8)))
        upserted = await stub.Upsert(
            spb.UpsertRequest(
                collection=name, points=[spb.Point(id="ok", vector=vector(8)), spb.Point(id="bad", vector=vector(5))]
            )
        )
        assert upserted.upserted_count == 1
        assert upserted.errors[0].id == "bad" and "dimension 5" in upserted.errors[0].message
        nan = spb.Vector(data=np.full(8, np.nan, dtype="<f4").tobytes(), dimension=8)
        rejected = await stub.Upsert(spb.UpsertRequest(collection=name, points=[spb.Point(id="nan", vector=nan)]))
        assert rejected.upserted_count == 0 and "NaN" in rejected.errors[0].message
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Query(spb.QueryRequest(collection=name, vector=vector(5), k=3))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "dimension 5" in (raised.value.details() or "") and "dimension 8" in (raised.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as ragged:
            await stub.Query(spb.QueryRequest(collection=name, vector=spb.Vector(data=b"\x00" * 7, dimension=8), k=3))
        assert ragged.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # Nothing stored was lost or changed by the rejected calls.
        got = await stub.Get(spb.GetRequest(collection=name, ids=["ok", "bad"], include_vectors=True))
        assert [p.id for p in got.points] == ["ok"] and got.points[0].vector.data == vector(8).data


async def test_writes_from_another_model_are_refused(stack: EmbeddedStack) -> None:
    name = f"model_{uuid.uuid4().hex[:8]}"
    async with stack.channel("search") as channel:
        stub = search_pb2_grpc.VectorStoreServiceStub(channel)
        model = spb.EmbeddingModel(id="model-a", revision="r1", dimension=8)
        await stub.CreateCollection(
            spb.CreateCollectionRequest(collection=spb.Collection(name=name, dimension=8, model=model))
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Upsert(
                spb.UpsertRequest(
                    collection=name,
                    points=[spb.Point(id="x", vector=vector(8))],
                    model=spb.EmbeddingModel(id="model-b", dimension=8),
                )
            )
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        other_revision = spb.EmbeddingModel(id="model-a", revision="r2", dimension=8)
        await stub.Upsert(spb.UpsertRequest(collection=name, points=[spb.Point(id="x", vector=vector(8))], model=model))
        with pytest.raises(grpc.aio.AioRpcError) as query_refused:
            await stub.Query(spb.QueryRequest(collection=name, vector=vector(8), k=1, model=other_revision))
        assert query_refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "revision r2" in (query_refused.value.details() or "")


async def test_embedder_rejects_empty_and_overlong_input_precisely(stack: EmbeddedStack) -> None:
    async with stack.channel("embedder") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as empty:
            await stub.Embed(epb.EmbedRequest(texts=["fine", ""]))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "texts[1]" in (empty.value.details() or "")
        long_text = "word " * 400
        with pytest.raises(grpc.aio.AioRpcError) as overlong:
            await stub.Embed(epb.EmbedRequest(texts=["ok", long_text], options=epb.EmbedOptions(truncate=False)))
        assert overlong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "texts[1]" in (overlong.value.details() or "") and "402 tokens" in (overlong.value.details() or "")
        truncated = await stub.Embed(epb.EmbedRequest(texts=[long_text]))
        assert truncated.embeddings.token_counts == [256]
        info = await stub.Info(epb.InfoRequest())
        assert (info.dimension, info.max_tokens, info.device) == (384, 256, "cpu")
        # The default backend is auto: measured on this CPU (or read from that measurement's cache).
        selection = info.backend_selection
        assert selection.requested == "auto" and "flags" in selection.cpu
        measured = {c.backend: c for c in selection.candidates}
        assert set(measured) == {"torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8"}
        assert measured[info.backend].eligible
        numerics = {"torch": "torch-float32", "onnx": "onnx-float32", "onnx-int8": "onnx-int8"}
        numerics |= {"openvino": "openvino-float32", "openvino-bf16": "openvino-bfloat16"}
        assert info.numerics == (numerics | {"openvino-int8": "openvino-int8+float32"})[info.backend]


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (
            "api",
            {
                "meshsearch.api.v1.CollectionService",
                "meshsearch.api.v1.DocumentService",
                "meshsearch.api.v1.SearchService",
            },
        ),
        ("embedder", {"meshsearch.embedder.v1.EmbedderService"}),
        ("search", {"meshsearch.search.v1.VectorStoreService"}),
    ],
)
async def test_reflection_lists_every_service(stack: EmbeddedStack, service: str, expected: set[str]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{getattr(stack.ports, service)}") as channel:
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(  # type: ignore[operator, arg-type]  # typeshed types the sync stub only
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        names = {s.name async for response in stream for s in response.list_services_response.service}
    assert expected | {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_request_id_crosses_service_boundaries_into_every_log(stack: EmbeddedStack, api: ApiClient) -> None:
    name = f"rid_{uuid.uuid4().hex[:8]}"
    await api.create(name)
    request_id = f"test-{uuid.uuid4().hex}"
    await api.search.Search(
        api_pb.SearchRequest(collection=name, query=f"unique query {request_id}"),
        metadata=(("x-request-id", request_id),),
    )
    logs = {service: stack.data_dir / "logs" / f"{service}.log" for service in ("api", "embedder", "search")}
    waiting.until_sync(
        lambda: all(request_id in log.read_text() for log in logs.values()),
        timeout_s=5,
        what=f"api, embedder and search all log request id {request_id}",
    )


def test_every_service_exports_prometheus_metrics(stack: EmbeddedStack) -> None:
    for port in (stack.ports.api_metrics, stack.ports.embedder_metrics, stack.ports.search_metrics):
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "meshsearch_rpc_handled_total" in body
    embedder_metrics = (
        urllib.request.urlopen(f"http://127.0.0.1:{stack.ports.embedder_metrics}/metrics", timeout=5).read().decode()
    )
    assert "meshsearch_embedder_batch_size_bucket" in embedder_metrics


def _internal_call(service: str, channel: grpc.aio.Channel):
    if service == "search":
        return search_pb2_grpc.VectorStoreServiceStub(channel).ListCollections(spb.ListCollectionsRequest(), timeout=30)
    return embedder_pb2_grpc.EmbedderServiceStub(channel).Embed(epb.EmbedRequest(texts=["who calls"]), timeout=30)


@pytest.mark.parametrize("service", ["search", "embedder"])
async def test_internal_ports_refuse_callers_without_the_stacks_token(stack: EmbeddedStack, service: str) -> None:
    """Another local user reaches the loopback port, but not the stack's caller token: refused
    before its request is read, while health stays open for probes."""
    target = f"127.0.0.1:{getattr(stack.ports, service)}"
    for channel in (grpc.aio.insecure_channel(target), operator_channel(target, "not-the-token")):
        async with channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _internal_call(service, channel)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "caller token" in (refused.value.details() or "")
            health = await health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    async with stack.channel(service) as channel:
        assert await _internal_call(service, channel) is not None


def test_the_embedded_redis_answers_only_with_its_password(stack: EmbeddedStack) -> None:
    """Rate limits, quotas and cached embeddings are not for other local users."""
    import redis

    for name, port, url in (
        ("redis", stack.ports.redis, stack.redis_url),
        ("redis-state", stack.ports.state_redis, stack.state_redis_url),
    ):
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
        assert redis.Redis.from_url(url, socket_timeout=5).ping()
        config = stack.data_dir / name / "redis.conf"
        assert config.stat().st_mode & 0o077 == 0, "the password file is its owner's alone"


def test_each_service_has_a_database_role_that_reaches_only_its_own_data(stack: EmbeddedStack) -> None:
    """The search service's role cannot connect to the database of API keys and jobs (nor the
    jobs role to the vectors'), and no role gets in without its password."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    databases = stack.databases
    assert databases is not None
    search_db = conninfo_to_dict(databases.search_url)["dbname"]
    jobs_db = conninfo_to_dict(databases.jobs_url)["dbname"]
    assert search_db != jobs_db
    with psycopg.connect(databases.jobs_url) as jobs:  # the api's own tables, live and in use
        assert jobs.execute("SELECT to_regclass('meshsearch_api_keys') IS NOT NULL").fetchone() == (True,)
    with psycopg.connect(databases.search_url) as search:
        assert search.execute("SELECT to_regclass('meshsearch_api_keys') IS NULL").fetchone() == (True,)
        assert search.execute("SELECT to_regclass('meshsearch_collections') IS NOT NULL").fetchone() == (True,)
    for url, other in ((databases.search_url, jobs_db), (databases.jobs_url, search_db)):
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(make_conninfo(url, dbname=other)).close()
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(make_conninfo(url, password="")).close()
