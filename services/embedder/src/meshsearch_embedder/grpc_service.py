"""gRPC adapter of the embedder: translates messages through `conversions`; the core does the work."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from meshsearch.embedder.v1 import embedder_pb2 as pb
from meshsearch.embedder.v1 import embedder_pb2_grpc as pb_grpc
from meshsearch_common.errors import MeshError
from meshsearch_common.readiness import Readiness
from meshsearch_embedder import conversions
from meshsearch_embedder.embedding import EmbeddingService


class EmbedderServicer(pb_grpc.EmbedderServiceServicer):
    def __init__(self, core: Readiness[EmbeddingService]) -> None:
        self._core = core

    @property
    def _service(self) -> EmbeddingService:
        return self._core.get()

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.EmbedResponse:
        result = await self._service.embed(list(request.texts), conversions.options_in(request.options))
        return pb.EmbedResponse(embeddings=conversions.embeddings_out(result, self._service.info))

    async def EmbedStream(
        self, request_iterator: AsyncIterator[pb.EmbedStreamRequest], context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[pb.EmbedStreamResponse]:
        """Requests are embedded concurrently (so they batch together); each answer is sent
        as soon as it is ready, tagged with its correlation id."""
        answers: asyncio.Queue[pb.EmbedStreamResponse | None] = asyncio.Queue()

        async def answer(message: pb.EmbedStreamRequest) -> None:
            try:
                result = await self._service.embed(list(message.texts), conversions.options_in(message.options))
                response = pb.EmbedStreamResponse(
                    correlation_id=message.correlation_id,
                    embeddings=conversions.embeddings_out(result, self._service.info),
                )
            except MeshError as exc:
                response = pb.EmbedStreamResponse(
                    correlation_id=message.correlation_id,
                    error=pb.StreamError(code=exc.code.value[0], message=exc.message),
                )
            await answers.put(response)

        async def read_all() -> None:
            async with asyncio.TaskGroup() as group:
                async for message in request_iterator:
                    group.create_task(answer(message))
            await answers.put(None)

        reader = asyncio.create_task(read_all())
        try:
            while (response := await answers.get()) is not None:
                yield response
            await reader
        finally:
            reader.cancel()

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.InfoResponse:
        info = self._service.info
        return pb.InfoResponse(
            model_id=info.model_id,
            model_revision=info.revision,
            dimension=info.dimension,
            max_tokens=info.max_tokens,
            dtype=info.dtype,
            backend=info.backend,
            device=info.device,
            prompt_names=sorted(info.prompts),
            max_texts_per_request=self._service.limits.max_texts_per_request,
            numerics=info.numerics,
            tokens_per_second=self._service.measured_tokens_per_s,
            backend_selection=conversions.selection_out(self._service.selection),
        )

    async def Tokenize(
        self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.TokenizeResponse:
        texts = list(request.texts)
        windows = (
            await self._service.windows(texts, request.chunk_tokens, request.chunk_overlap_tokens)
            if request.chunk_tokens
            else []
        )
        # Chunking (ingestion's call) counts tokens in the same pass; a prompt changes the counts.
        counts = (
            [cut.tokens for cut in windows]
            if windows and not request.prompt_name
            else await self._service.count_tokens(texts, request.prompt_name)
        )
        response = pb.TokenizeResponse(
            token_counts=counts,
            max_tokens=self._service.info.max_tokens,
            special_tokens=self._service.special_tokens,
        )
        for cut in windows:
            response.chunks.add(starts=[start for start, _ in cut.spans], ends=[end for _, end in cut.spans])
        return response
