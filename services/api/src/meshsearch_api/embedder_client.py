"""EmbedderClient: texts to vectors through the embedding cache and the embedder upstream.

Vectors are only comparable within one model and revision, so every result carries the
identity that produced it, read from the embedder's own answer rather than from a cache: if
the embedder is redeployed with another model, writes and queries carry the new identity and
the search service refuses them for collections of the old one (FAILED_PRECONDITION).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from meshsearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from meshsearch_api.domain import ModelIdentity
from meshsearch_api.embedding_cache import EmbeddingCache
from meshsearch_common import vectors
from meshsearch_common.client import Upstream
from meshsearch_common.errors import Unavailable


@dataclass(frozen=True)
class Embedded:
    vectors: npt.NDArray[np.float32]  # (len(texts), dimension), unit length
    model: ModelIdentity
    queue_s: float = 0.0  # time the texts waited behind other work in the embedder (0 when all were cached)
    backlog_s: float = 0.0  # embedder work admitted ahead of this call (0 when all were cached)


# What a cached value is: the unit-length (normalized) vector, at the model's full dimension, of
# the text alone (no prompt). Part of every cache key, so that changing what is cached (another
# normalization, a prompt, truncated dimensions) starts a new namespace instead of mixing.
CACHED_VECTOR_FORMAT = "normalized-full-noprompt"


class EmbedderClient:
    def __init__(self, upstream: Upstream, cache_factory: Callable[[str], EmbeddingCache]) -> None:
        self._upstream = upstream
        self._stub = embedder_pb2_grpc.EmbedderServiceStub(upstream.channel)
        self._cache_factory = cache_factory
        self._model: ModelIdentity | None = None
        self._cache: EmbeddingCache | None = None
        self._window: int | None = None

    def _adopt(self, model: ModelIdentity) -> None:
        self._model = model
        self._window = None
        self._cache = self._cache_factory(f"{model.id}@{model.revision}:{CACHED_VECTOR_FORMAT}")

    async def model(self) -> ModelIdentity:
        """The embedder's model identity as last seen (asked with Info the first time)."""
        if self._model is None:
            info = await self._upstream.call(self._stub.Info, embedder_pb2.InfoRequest())
            self._adopt(ModelIdentity(info.model_id, info.model_revision, info.dimension))
        assert self._model is not None
        return self._model

    async def window_tokens(self) -> int:
        """Tokens of text one chunk may hold: the model's limit less its special tokens."""
        if self._window is None:
            response = await self._upstream.call(self._stub.Tokenize, embedder_pb2.TokenizeRequest(texts=["."]))
            self._window = int(response.max_tokens - response.special_tokens)
        return self._window

    async def windows(self, texts: list[str], chunk_tokens: int, overlap_tokens: int) -> list[list[tuple[int, int]]]:
        """Character spans of each text's chunks, cut on the model's token boundaries."""
        response = await self._upstream.call(
            self._stub.Tokenize,
            embedder_pb2.TokenizeRequest(texts=texts, chunk_tokens=chunk_tokens, chunk_overlap_tokens=overlap_tokens),
        )
        return [list(zip(chunks.starts, chunks.ends, strict=True)) for chunks in response.chunks]

    async def embed(self, texts: list[str], timeout_s: float | None = None) -> Embedded:
        """Unit-length vectors for `texts`, all from one model, and that model's identity.
        `timeout_s` caps the embedder's share of the call's time (the deadline still applies)."""
        for _ in range(2):
            model = await self.model()
            embedded = await self._embed_as(model, texts, timeout_s)
            if embedded is not None:
                return embedded
        raise Unavailable("the embedder's model changed twice during one call; retry")

    async def _embed_as(self, model: ModelIdentity, texts: list[str], timeout_s: float | None) -> Embedded | None:
        """Embed under the expected identity; None when the embedder answered with another
        model (its identity is adopted, so the caller retries with a fresh cache namespace
        and never mixes cached vectors of the old model with new ones)."""
        assert self._cache is not None
        cache = self._cache
        cached = await cache.get_many(texts, model.dimension)
        missing = [i for i, vector in enumerate(cached) if vector is None]
        result = np.empty((len(texts), model.dimension), dtype=np.float32)
        for i, vector in enumerate(cached):
            if vector is not None:
                result[i] = vector
        if not missing:
            return Embedded(result, model)
        unique = list(dict.fromkeys(texts[i] for i in missing))  # identical texts embedded once
        response = await self._upstream.call(
            functools.partial(self._stub.Embed, timeout=timeout_s),
            embedder_pb2.EmbedRequest(texts=unique, options=embedder_pb2.EmbedOptions()),
        )
        produced = ModelIdentity(
            response.embeddings.model_id, response.embeddings.model_revision, response.embeddings.dimension
        )
        if produced != model:
            self._adopt(produced)
            return None
        embedded = vectors.unpack(response.embeddings.vectors, response.embeddings.dimension)
        by_text = dict(zip(unique, embedded, strict=True))
        for i in missing:
            result[i] = by_text[texts[i]]
        await cache.put_many(unique, embedded)
        timing = response.embeddings.timing
        return Embedded(result, model, queue_s=timing.queue_ms / 1000, backlog_s=timing.backlog_ms / 1000)
