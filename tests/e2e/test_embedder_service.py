"""The embedder over gRPC with the real model: options, streaming, limits and overload."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
import pytest_asyncio

from meshsearch.embedder.v1 import embedder_pb2 as pb
from meshsearch.embedder.v1 import embedder_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack
from meshsearch_common.errors import retry_after_of
from meshsearch_common.server import RunningService, start_service
from meshsearch_embedder.app import EmbedderApp
from meshsearch_embedder.settings import EmbedderSettings


def matrix(embeddings: pb.Embeddings) -> np.ndarray:
    return np.frombuffer(embeddings.vectors, dtype="<f4").reshape(-1, embeddings.dimension)


@pytest.fixture
async def embedder(stack: EmbeddedStack) -> AsyncIterator[embedder_pb2_grpc.EmbedderServiceStub]:
    async with stack.channel("embedder") as channel:
        yield embedder_pb2_grpc.EmbedderServiceStub(channel)


async def test_options_control_normalization_dimensions_and_report_timing(embedder) -> None:
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today."]
    default = (await embedder.Embed(pb.EmbedRequest(texts=texts))).embeddings
    assert default.dimension == 384 and matrix(default).shape == (2, 384)
    assert np.allclose(np.linalg.norm(matrix(default), axis=1), 1, atol=1e-5)
    assert default.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert all(count > 2 for count in default.token_counts)
    assert default.timing.inference_ms > 0
    raw = (await embedder.Embed(pb.EmbedRequest(texts=texts, options=pb.EmbedOptions(normalize=False)))).embeddings
    assert not np.allclose(np.linalg.norm(matrix(raw), axis=1), 1, atol=1e-3)
    short = (await embedder.Embed(pb.EmbedRequest(texts=texts, options=pb.EmbedOptions(dimensions=128)))).embeddings
    assert short.dimension == 128
    assert np.allclose(np.linalg.norm(matrix(short), axis=1), 1, atol=1e-5)
    expected = matrix(raw)[:, :128] / np.linalg.norm(matrix(raw)[:, :128], axis=1, keepdims=True)
    assert np.allclose(matrix(short), expected, atol=1e-5)
    counts = await embedder.Tokenize(pb.TokenizeRequest(texts=texts))
    assert list(counts.token_counts) == list(default.token_counts) and counts.max_tokens == 256


async def test_chunking_counts_tokens_as_counting_alone_does(embedder) -> None:
    """Tokenize with chunk_tokens counts in its chunking pass; the counts must not change."""
    texts = [
        "a",
        "Plain words.",
        "naïve café, Zürich — 東京 and emoji 🚀🚀 too",
        "  spaced\tout\n\ntext  ",
        " ".join(f"word{i}" for i in range(400)),  # longer than the model's window
    ]
    counted = await embedder.Tokenize(pb.TokenizeRequest(texts=texts))
    chunked = await embedder.Tokenize(pb.TokenizeRequest(texts=texts, chunk_tokens=128, chunk_overlap_tokens=16))
    assert list(chunked.token_counts) == list(counted.token_counts)
    assert counted.token_counts[-1] > 256 and len(chunked.chunks[-1].starts) > 1
    assert [len(c.starts) for c in chunked.chunks[:-1]] == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("request_message", "fragment"),
    [
        (pb.EmbedRequest(), "at least one text"),
        (pb.EmbedRequest(texts=["x"] * 513), "limit of 512 texts"),
        (pb.EmbedRequest(texts=["ok", "y" * 70_000]), "texts[1] is 70000 bytes"),
        (pb.EmbedRequest(texts=["ok"], options=pb.EmbedOptions(prompt_name="nope")), "unknown prompt_name 'nope'"),
        (pb.EmbedRequest(texts=["ok"], options=pb.EmbedOptions(dimensions=1000)), "exceeds the model's dimension 384"),
    ],
)
async def test_bad_requests_name_the_limit_they_break(embedder, request_message, fragment: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await embedder.Embed(request_message)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (raised.value.details() or "")


async def test_a_message_over_the_size_limit_is_refused_while_it_is_read(embedder) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await embedder.Embed(pb.EmbedRequest(texts=["z" * 60_000] * 70))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "larger than max" in (raised.value.details() or "") and "4194304" in (raised.value.details() or "")


async def test_stream_answers_by_correlation_id_and_survives_a_bad_request(embedder) -> None:
    requests = [
        pb.EmbedStreamRequest(correlation_id="a", texts=["first text"]),
        pb.EmbedStreamRequest(correlation_id="bad", texts=[""]),
        pb.EmbedStreamRequest(correlation_id="b", texts=["second text", "third text"]),
    ]
    answers = {response.correlation_id: response async for response in embedder.EmbedStream(iter(requests))}
    assert set(answers) == {"a", "bad", "b"}
    assert answers["bad"].WhichOneof("outcome") == "error"
    assert answers["bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert matrix(answers["b"].embeddings).shape == (2, 384)
    unary = (await embedder.Embed(pb.EmbedRequest(texts=["first text"]))).embeddings
    cosine = float((matrix(answers["a"].embeddings) * matrix(unary)).sum())
    # int8 quantizes activations per batch, so a text's vector moves slightly with its
    # batch-mates (docs/architecture.md); float backends agree to rounding whatever the batch.
    assert cosine >= (0.98 if unary.model_numerics.endswith("int8") else 0.99999), (unary.model_numerics, cosine)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def small_embedder() -> AsyncIterator[RunningService]:
    """An in-process embedder with a tiny admission bound, to be overloaded on purpose."""
    settings = EmbedderSettings(port=0, metrics_port=0, max_tokens_in_flight=2_000, max_batch_size=8)
    service = await start_service(EmbedderApp(settings), settings)
    yield service
    await service.stop(1)


@pytest.mark.asyncio(loop_scope="module")
async def test_overload_is_refused_at_once_with_a_retry_delay(small_embedder: RunningService) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_embedder.port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        passage = "an ordinary sentence about nothing in particular " * 4
        outcomes = await asyncio.gather(
            *(stub.Embed(pb.EmbedRequest(texts=[passage] * 4)) for _ in range(40)), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
        served = [o for o in outcomes if not isinstance(o, BaseException)]
        assert refused and served
        assert all(error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for error in refused)
        assert all("overloaded" in (error.details() or "") for error in refused)
        assert all((retry_after_of(error) or 0) > 0 for error in refused)
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError):
            await asyncio.gather(*(stub.Embed(pb.EmbedRequest(texts=[passage] * 8)) for _ in range(20)))
        assert time.perf_counter() - started < 10  # refusals do not wait for the queue to drain


@pytest.mark.asyncio(loop_scope="module")
async def test_a_flood_of_malformed_requests_neither_crashes_nor_wedges_the_server(
    small_embedder: RunningService,
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{small_embedder.port}") as channel:
        stub = embedder_pb2_grpc.EmbedderServiceStub(channel)
        garbage = [
            pb.EmbedRequest(),
            pb.EmbedRequest(texts=[""] * 3),
            pb.EmbedRequest(texts=["x" * 100_000]),
            pb.EmbedRequest(texts=["ok"] * 600),
            pb.EmbedRequest(texts=["w " * 2000], options=pb.EmbedOptions(truncate=False)),
            pb.EmbedRequest(texts=["\ufffd replacement characters \u0000 and a NUL"]),
        ]
        outcomes = await asyncio.gather(
            *(stub.Embed(garbage[i % len(garbage)]) for i in range(300)), return_exceptions=True
        )
        codes = {o.code() for o in outcomes if isinstance(o, grpc.aio.AioRpcError)}
        assert codes <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}
        healthy = await stub.Embed(pb.EmbedRequest(texts=["still alive?"]), timeout=30)
        assert healthy.embeddings.dimension == 384
