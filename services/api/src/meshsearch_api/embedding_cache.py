"""Embedding cache in Redis, keyed by model identity + options + sha256(text).

Fail-open: the cache only ever saves work. Any Redis error is logged, counted, and the cache
is bypassed for a cool-down period so a dead Redis costs one timeout, not one per request.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import numpy.typing as npt
import redis.asyncio as redis
from prometheus_client import Counter

from meshsearch_api.auth import principal
from meshsearch_common import vectors

log = logging.getLogger(__name__)

CACHE_LOOKUPS = Counter("meshsearch_api_embedding_cache_total", "Embedding cache lookups by outcome.", ["outcome"])

_COOL_DOWN_S = 5.0


class EmbeddingCache:
    def __init__(self, client: redis.Redis | None, namespace: str, ttl_s: int) -> None:
        """`namespace` identifies the model and options; vectors under another namespace are never mixed."""
        self._client = client
        self._namespace = namespace
        self._ttl_s = ttl_s
        self._skip_until = 0.0

    def _key(self, text: str) -> str:
        # Per tenant: a hit shared across tenants would tell one, by its speed, what another indexed.
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"meshsearch:emb:{principal.tenant()}:{self._namespace}:{digest}"

    def _usable(self) -> bool:
        return self._client is not None and time.monotonic() >= self._skip_until

    def _failed(self, exc: Exception) -> None:
        CACHE_LOOKUPS.labels("error").inc()
        self._skip_until = time.monotonic() + _COOL_DOWN_S
        log.warning("embedding cache unavailable; bypassing it", extra={"error": str(exc)})

    async def get_many(self, texts: list[str], dimension: int) -> list[npt.NDArray[np.float32] | None]:
        if not self._usable():
            return [None] * len(texts)
        assert self._client is not None
        try:
            values = await self._client.mget([self._key(text) for text in texts])
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return [None] * len(texts)
        found: list[npt.NDArray[np.float32] | None] = []
        for value in values:
            if isinstance(value, bytes) and len(value) == 4 * dimension:
                found.append(vectors.view(value, dimension)[0])
                CACHE_LOOKUPS.labels("hit").inc()
            else:
                found.append(None)
                CACHE_LOOKUPS.labels("miss").inc()
        return found

    async def put_many(self, texts: list[str], embeddings: npt.NDArray[np.float32]) -> None:
        if not self._usable() or not texts:
            return
        assert self._client is not None
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for text, vector in zip(texts, embeddings, strict=True):
                    pipe.set(self._key(text), vectors.pack(vector), ex=self._ttl_s)
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
