"""EmbedderClient: texts to vectors through the embedding cache and the embedder upstream.

Vectors are only comparable within one model and revision (and equal only within one
numerics), so every result carries the identity that produced it, read from the embedder's own
answer rather than from a cache: if the embedder is redeployed with another model, writes and
queries carry the new identity and the search service refuses them for collections of the old
one (FAILED_PRECONDITION). The cache is keyed by the whole identity.
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
        self._caches: dict[ModelIdentity, EmbeddingCache] = {}
        self._model: ModelIdentity | None = None
        self._window: int | None = None

    def _cache(self, model: ModelIdentity) -> EmbeddingCache:
        """The cache namespace of one identity: vectors of another model, revision or numerics
        never answer for this one."""
        cache = self._caches.get(model)
        if cache is None:
            if len(self._caches) >= 16:
                self._caches.clear()
            namespace = f"{model.id}@{model.revision}/{model.numerics}:{CACHED_VECTOR_FORMAT}"
            cache = self._caches[model] = self._cache_factory(namespace)
        return cache

    def _adopt(self, model: ModelIdentity) -> None:
        if self._model is not None and (self._model.id, self._model.revision) != (model.id, model.revision):
            self._window = None
        self._model = model

    async def model(self) -> ModelIdentity:
        """The embedder's model identity as last seen (asked with Info the first time)."""
        if self._model is None:
            info = await self._upstream.call(self._stub.Info, embedder_pb2.InfoRequest())
            self._adopt(ModelIdentity(info.model_id, info.model_revision, info.dimension, numerics=info.numerics))
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

    async def measure(self, texts: list[str], chunk_tokens: int, overlap_tokens: int) -> tuple[list[int], list[int]]:
        """Tokens and chunks of each text under the given chunking (without embedding them)."""
        response = await self._upstream.call(
            self._stub.Tokenize,
            embedder_pb2.TokenizeRequest(texts=texts, chunk_tokens=chunk_tokens, chunk_overlap_tokens=overlap_tokens),
        )
        return list(response.token_counts), [len(chunks.starts) for chunks in response.chunks]

    async def tokens_per_second(self) -> float:
        """The answering replica's measured throughput (0 before its first batch)."""
        info = await self._upstream.call(self._stub.Info, embedder_pb2.InfoRequest())
        return float(info.tokens_per_second)

    async def embed(self, texts: list[str], timeout_s: float | None = None, background: bool = False) -> Embedded:
        """Unit-length vectors for `texts`, all from one identity, and that identity.
        `timeout_s` caps the embedder's share of the call's time (the deadline still applies).
        Background work (bulk ingestion) is batched after interactive work in the embedder.

        Replicas behind one target may differ (a redeployed model, a GPU replica next to CPU
        ones): when another identity than the expected one answers after cached vectors were
        taken, the call is redone without the cache, so one result never mixes identities."""
        embedded = await self._embed_as(await self.model(), texts, timeout_s, True, background)
        if embedded is None:
            embedded = await self._embed_as(await self.model(), texts, timeout_s, False, background)
        assert embedded is not None
        return embedded

    async def _embed_as(
        self, model: ModelIdentity, texts: list[str], timeout_s: float | None, use_cache: bool, background: bool
    ) -> Embedded | None:
        cached = await self._cache(model).get_many(texts, model.dimension) if use_cache else [None] * len(texts)
        missing = [i for i, vector in enumerate(cached) if vector is None]
        if not missing:
            return Embedded(np.stack([v for v in cached if v is not None]), model)
        unique = list(dict.fromkeys(texts[i] for i in missing))  # identical texts embedded once
        response = await self._upstream.call(
            functools.partial(self._stub.Embed, timeout=timeout_s),
            embedder_pb2.EmbedRequest(texts=unique, options=embedder_pb2.EmbedOptions(background=background)),
        )
        answer = response.embeddings
        produced = ModelIdentity(
            answer.model_id, answer.model_revision, answer.dimension, numerics=answer.model_numerics
        )
        if produced != model:
            self._adopt(produced)
            if len(missing) < len(texts):
                return None  # cached vectors of `model` would be mixed with `produced` ones
        embedded = vectors.unpack(answer.vectors, answer.dimension)
        by_text = dict(zip(unique, embedded, strict=True))
        result = np.empty((len(texts), produced.dimension), dtype=np.float32)
        for i, vector in enumerate(cached):
            result[i] = by_text[texts[i]] if vector is None else vector
        await self._cache(produced).put_many(unique, embedded)
        return Embedded(
            result, produced, queue_s=answer.timing.queue_ms / 1000, backlog_s=answer.timing.backlog_ms / 1000
        )
