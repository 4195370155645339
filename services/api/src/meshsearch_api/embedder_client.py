"""EmbedderClient: texts to vectors through the embedding cache and the embedder upstream."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from meshsearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from meshsearch_api.domain import ModelIdentity
from meshsearch_api.embedding_cache import EmbeddingCache
from meshsearch_common import vectors
from meshsearch_common.client import Upstream


class EmbedderClient:
    def __init__(self, upstream: Upstream, cache_factory: Callable[[str], EmbeddingCache]) -> None:
        self._upstream = upstream
        self._stub = embedder_pb2_grpc.EmbedderServiceStub(upstream.channel)
        self._cache_factory = cache_factory
        self._model: ModelIdentity | None = None
        self._cache: EmbeddingCache | None = None

    async def model(self) -> ModelIdentity:
        """The embedder's model identity, asked once and then remembered.

        All replicas behind one target must serve the same model; the cache namespace and the
        model recorded on collections both come from this answer.
        """
        if self._model is None:
            info = await self._upstream.call(self._stub.Info, embedder_pb2.InfoRequest())
            self._model = ModelIdentity(info.model_id, info.model_revision, info.dimension)
            self._cache = self._cache_factory(f"{info.model_id}@{info.model_revision}:n1")
        return self._model

    async def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Unit-length vectors for `texts`, shape (len(texts), dimension)."""
        model = await self.model()
        assert self._cache is not None
        cached = await self._cache.get_many(texts, model.dimension)
        missing = [i for i, vector in enumerate(cached) if vector is None]
        result = np.empty((len(texts), model.dimension), dtype=np.float32)
        for i, vector in enumerate(cached):
            if vector is not None:
                result[i] = vector
        if missing:
            # Identical texts in one call are embedded once.
            unique = list(dict.fromkeys(texts[i] for i in missing))
            response = await self._upstream.call(
                self._stub.Embed, embedder_pb2.EmbedRequest(texts=unique, options=embedder_pb2.EmbedOptions())
            )
            embedded = vectors.unpack(response.embeddings.vectors, response.embeddings.dimension)
            by_text = dict(zip(unique, embedded, strict=True))
            for i in missing:
                result[i] = by_text[texts[i]]
            await self._cache.put_many(unique, embedded)
        return result
