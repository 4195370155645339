"""The embedder's core use case: validated texts in, finished vectors out.

Validation here is what turns bad input into precise INVALID_ARGUMENT errors (naming the
index, the limit, the token count) before any model time is spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from meshsearch_common import context
from meshsearch_common.errors import InvalidArgument, ResourceExhausted
from meshsearch_embedder import metrics
from meshsearch_embedder.backend import ModelInfo, Windows
from meshsearch_embedder.batcher import Batcher, Embedded, Overloaded
from meshsearch_embedder.selection import Selection


@dataclass(frozen=True)
class EmbedOptions:
    normalize: bool = True
    truncate: bool = True
    prompt_name: str = ""
    dimensions: int = 0
    background: bool = False  # batched after every interactive text waiting


@dataclass(frozen=True)
class Limits:
    """Request bounds, from EmbedderSettings (no defaults of their own)."""

    max_texts_per_request: int
    max_text_bytes: int


class EmbeddingService:
    def __init__(self, batcher: Batcher, info: ModelInfo, selection: Selection, limits: Limits) -> None:
        self._batcher = batcher
        self.info = info
        self.selection = selection
        self.limits = limits

    def _validate(self, texts: list[str], options: EmbedOptions) -> str:
        if not texts:
            raise InvalidArgument("texts must contain at least one text")
        if len(texts) > self.limits.max_texts_per_request:
            metrics.REJECTIONS.labels("too_many_texts").inc()
            raise InvalidArgument(
                f"{len(texts)} texts exceed the limit of {self.limits.max_texts_per_request} texts per request"
            )
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidArgument(f"texts[{index}] is empty; every text must contain non-whitespace characters")
            size = len(text.encode("utf-8"))
            if size > self.limits.max_text_bytes:
                metrics.REJECTIONS.labels("text_too_large").inc()
                raise InvalidArgument(
                    f"texts[{index}] is {size} bytes, over the limit of {self.limits.max_text_bytes} bytes per text"
                )
        if options.prompt_name and options.prompt_name not in self.info.prompts:
            known = ", ".join(sorted(self.info.prompts)) or "none"
            raise InvalidArgument(f"unknown prompt_name '{options.prompt_name}'; this model knows: {known}")
        if options.dimensions > self.info.dimension:
            raise InvalidArgument(
                f"dimensions {options.dimensions} exceeds the model's dimension {self.info.dimension}"
            )
        return self.info.prompts.get(options.prompt_name, "") if options.prompt_name else ""

    async def count_tokens(self, texts: list[str], prompt_name: str) -> list[int]:
        prefix = self._validate(texts, EmbedOptions(prompt_name=prompt_name))
        with metrics.TOKENIZE_SECONDS.time():
            token_ids = await self._batcher.tokenize([prefix + text for text in texts], truncate=False)
        return [len(ids) for ids in token_ids]

    @property
    def special_tokens(self) -> int:
        return self._batcher.special_tokens

    @property
    def measured_tokens_per_s(self) -> float:
        """Throughput the batcher measured (0 until a batch ran), for callers' load estimates."""
        return self._batcher.throughput.tokens_per_s if self._batcher.throughput.measured else 0.0

    async def windows(self, texts: list[str], size: int, overlap: int) -> list[Windows]:
        """Token counts and spans of token windows per text (see EncoderBackend.windows); validated here."""
        self._validate(texts, EmbedOptions())
        room = self.info.max_tokens - self._batcher.special_tokens
        if not 1 <= size <= room:
            raise InvalidArgument(f"chunk_tokens {size} is out of range: 1 to {room} (the model's window)")
        if overlap >= size:
            raise InvalidArgument(f"chunk_overlap_tokens {overlap} must be less than chunk_tokens {size}")
        with metrics.TOKENIZE_SECONDS.time():
            return await self._batcher.windows(texts, size, overlap)

    async def embed(self, texts: list[str], options: EmbedOptions) -> Embedded:
        prefix = self._validate(texts, options)
        started = time.perf_counter()
        token_ids = await self._batcher.tokenize([prefix + text for text in texts], truncate=options.truncate)
        tokenize_s = time.perf_counter() - started
        metrics.TOKENIZE_SECONDS.observe(tokenize_s)
        if not options.truncate:
            for index, ids in enumerate(token_ids):
                if len(ids) > self.info.max_tokens:
                    raise InvalidArgument(
                        f"texts[{index}] has {len(ids)} tokens, over the model's limit of "
                        f"{self.info.max_tokens}; shorten it or set truncate"
                    )
        deadline = context.deadline.get()
        try:
            result = await self._batcher.embed(token_ids, deadline, tokenize_s, background=options.background)
        except Overloaded as exc:
            raise ResourceExhausted(str(exc), retry_after_s=exc.retry_after_s) from None
        vectors = result.vectors
        if options.dimensions:
            vectors = vectors[:, : options.dimensions]
        if options.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return replace(result, vectors=np.ascontiguousarray(vectors, dtype=np.float32))
