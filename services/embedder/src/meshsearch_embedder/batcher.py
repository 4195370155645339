"""Dynamic batching: many small concurrent requests become few efficient forward passes.

Guarantees:
- a batch holds at most `max_batch_size` texts and at most `max_batch_tokens` padded tokens
  (rows x longest row), so a burst of long texts cannot exhaust memory;
- the oldest waiting text always goes into the next batch (nothing starves); the rest of the
  batch is filled with the texts closest to it in length, so padding stays low;
- a batch is dispatched as soon as the model is free: texts arriving while a batch runs wait
  for it (that wait is what forms the next batch); there is no fixed timer;
- texts whose request was cancelled or whose deadline passed are dropped before inference;
- admission is bounded by tokens in flight: past it, `Overloaded` is raised at once.
Tokenization runs on a thread pool and inference on one dedicated thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from meshsearch_embedder import metrics


class Encoder(Protocol):
    def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]: ...
    def encode(self, batch: list[list[int]]) -> npt.NDArray[np.float32]: ...


class Overloaded(Exception):
    """Admission refused: too many tokens already in flight."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"model is overloaded; retry after {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s


@dataclass
class _Request:
    """State shared by the texts of one call."""

    deadline: float | None
    queue_s: float = 0.0
    inference_s: float = 0.0
    batches: set[int] = field(default_factory=set)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


@dataclass
class _Item:
    token_ids: list[int]
    request: _Request
    future: asyncio.Future[npt.NDArray[np.float32]]
    enqueued_at: float


@dataclass(frozen=True)
class BatchResult:
    """Raw (unnormalized) embeddings of one call, with where its time went."""

    vectors: npt.NDArray[np.float32]
    token_counts: list[int]
    queue_s: float
    tokenize_s: float
    inference_s: float


class Batcher:
    def __init__(
        self,
        encoder: Encoder,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_tokens_in_flight: int,
        min_padding_efficiency: float = 0.0,
    ) -> None:
        self._encoder = encoder
        self._min_padding_efficiency = min_padding_efficiency
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        self._max_tokens_in_flight = max_tokens_in_flight
        self._pending: list[_Item] = []
        self._tokens_in_flight = 0
        self._wakeup = asyncio.Event()
        self._tokenizer_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tokenize")
        self._inference_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self._batch_seq = 0
        # Measured throughput, for the retry-after hint given to rejected callers.
        self._tokens_per_s = 5_000.0

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for item in self._pending:
            if not item.future.done():
                item.future.cancel()
        self._pending.clear()
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        self._inference_pool.shutdown(wait=True)

    async def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_pool, self._encoder.tokenize, texts, truncate)

    def admit(self, tokens: int) -> None:
        """Raise Overloaded unless `tokens` more fit under the in-flight bound."""
        if self._tokens_in_flight > 0 and self._tokens_in_flight + tokens > self._max_tokens_in_flight:
            metrics.REJECTIONS.labels("overloaded").inc()
            raise Overloaded(retry_after_s=max(0.05, self._tokens_in_flight / self._tokens_per_s))

    async def embed(self, token_ids: list[list[int]], deadline: float | None, tokenize_s: float) -> BatchResult:
        """Embed pre-tokenized texts. Raises Overloaded at once when admission is refused."""
        self.admit(sum(map(len, token_ids)))
        loop = asyncio.get_running_loop()
        request = _Request(deadline=deadline)
        now = time.perf_counter()
        items = [_Item(ids, request, loop.create_future(), now) for ids in token_ids]
        self._tokens_in_flight += sum(len(item.token_ids) for item in items)
        self._pending.extend(items)
        metrics.QUEUE_SIZE.set(len(self._pending))
        self._wakeup.set()
        # If the caller goes away, this gather is cancelled and cancels every item's future;
        # the batcher skips items whose future is already done.
        rows = await asyncio.gather(*(item.future for item in items))
        return BatchResult(
            vectors=np.stack(rows),
            token_counts=[len(ids) for ids in token_ids],
            queue_s=request.queue_s,
            tokenize_s=tokenize_s,
            inference_s=request.inference_s,
        )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            batch = self._take_batch()
            if not batch:
                continue
            started = time.perf_counter()
            for item in batch:
                waited = started - item.enqueued_at
                item.request.queue_s = max(item.request.queue_s, waited)
                metrics.QUEUE_SECONDS.observe(waited)
            try:
                vectors = await loop.run_in_executor(
                    self._inference_pool, self._encoder.encode, [item.token_ids for item in batch]
                )
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting caller
                self._finish(batch)
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self._observe(batch, elapsed)
            self._finish(batch)
            for row, item in enumerate(batch):
                if not item.future.done():
                    item.future.set_result(vectors[row])

    def _take_batch(self) -> list[_Item]:
        """Remove and return the next batch: the oldest item plus its nearest neighbours in length."""
        monotonic_now = time.monotonic()
        live = []
        for item in self._pending:
            if item.request.expired(monotonic_now) or item.future.done():
                self._drop(item)
            else:
                live.append(item)
        if not live:
            self._pending = []
            metrics.QUEUE_SIZE.set(0)
            return []
        oldest = min(live, key=lambda item: item.enqueued_at)
        seed_length = len(oldest.token_ids)
        candidates = sorted(live, key=lambda item: (abs(len(item.token_ids) - seed_length), item.enqueued_at))
        batch: list[_Item] = []
        longest = real = 0
        for item in candidates:
            if len(batch) == self._max_batch_size:
                break
            new_longest = max(longest, len(item.token_ids))
            padded = new_longest * (len(batch) + 1)
            if batch and padded > self._max_batch_tokens:
                continue
            if batch and (real + len(item.token_ids)) / padded < self._min_padding_efficiency:
                break  # candidates only get further from the seed's length from here on
            batch.append(item)
            longest, real = new_longest, real + len(item.token_ids)
        chosen = {id(item) for item in batch}
        self._pending = [item for item in live if id(item) not in chosen]
        metrics.QUEUE_SIZE.set(len(self._pending))
        return batch

    def _drop(self, item: _Item) -> None:
        self._tokens_in_flight -= len(item.token_ids)
        metrics.REJECTIONS.labels("expired").inc()
        if not item.future.done():
            item.future.cancel()

    def _finish(self, batch: list[_Item]) -> None:
        self._tokens_in_flight -= sum(len(item.token_ids) for item in batch)

    def _observe(self, batch: list[_Item], elapsed: float) -> None:
        self._batch_seq += 1
        real = sum(len(item.token_ids) for item in batch)
        padded = len(batch) * max(len(item.token_ids) for item in batch)
        for item in batch:
            if self._batch_seq not in item.request.batches:
                item.request.batches.add(self._batch_seq)
                item.request.inference_s += elapsed
        self._tokens_per_s = 0.8 * self._tokens_per_s + 0.2 * (real / max(elapsed, 1e-6))
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.BATCH_TOKENS.observe(padded)
        metrics.PADDING_EFFICIENCY.observe(real / padded)
        metrics.INFERENCE_SECONDS.observe(elapsed)
