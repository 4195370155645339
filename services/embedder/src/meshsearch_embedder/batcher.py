"""Dynamic batching: many small concurrent requests become few efficient forward passes.

Guarantees:
- a batch holds at most `max_batch_size` texts and at most `max_batch_tokens` padded tokens
  (rows x longest row), so a burst of long texts cannot exhaust memory;
- the oldest waiting text always goes into the next batch (nothing starves); the rest of the
  batch is filled with the texts closest to it in length, so padding stays low;
- a batch is dispatched as soon as the model has a free slot (one, or the engine's
  `concurrent_batches`): texts arriving while every slot runs wait for one (that wait is what
  forms the next batch); there is no fixed timer;
- texts whose request was cancelled or whose deadline passed are dropped before inference;
- admission knows time: each request is promised an answer within `admission_budget_share`
  of its remaining deadline (the rest is its caller's, to store what it gets). A request that
  the work already admitted (plus its own) cannot serve by then, at the measured throughput,
  is refused at once with `Overloaded` and a retry delay (when that much of the backlog will
  have drained). An idle model takes any request. Admission is also bounded by tokens in
  flight (memory): past it, `Overloaded` too;
- the promise is kept even when the estimate was wrong (the CPU got busier, texts were longer):
  a waiting text that could no longer be done by its request's promise, were its batch to start
  now, is shed and the request refused with `Overloaded`, so callers see a refusal to retry,
  never a timeout.
Tokenization runs on threads (short requests on the loop) and inference on dedicated threads,
one per slot. Optionally (`inline_infer_tokens`, off by default), a small request that finds
the model idle is inferred on the event loop itself, which saves the hand-offs to a thread and
back: idle single-text p50 1.92 -> 1.48 ms, at the cost of about 15% of the answers per second
when many callers send only short queries (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from meshsearch_embedder import metrics
from meshsearch_embedder.backend import EncoderBackend, Windows

# Throughput assumed before the first batch has been measured (tokens per second).
_INITIAL_TOKENS_PER_S = 5_000.0
# How recently an interactive call must have arrived for background passes to be cut small.
INTERACTIVE_TRAFFIC_WINDOW_S = 5.0
# Requests with at most this many characters are tokenized on the event loop (see tokenize).
INLINE_TOKENIZE_CHARS = 1024
# Weight kept by past batches at each new measurement of throughput.
_THROUGHPUT_DECAY = 0.9


class Overloaded(Exception):
    """Admission refused: the backlog cannot be served in time, or holds too many tokens."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(f"overloaded: {reason}; retry after {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s


class Throughput:
    """Tokens per second the model has been sustaining: decayed sums of real tokens over decayed
    sums of forward-pass time. Weighting by time means a stream of tiny query batches (slow per
    token) cannot drag down the estimate that decides whether a bulk backlog fits a deadline."""

    def __init__(self) -> None:
        self._tokens = 0.0
        self._seconds = 0.0

    def observe(self, tokens: int, seconds: float) -> None:
        self._tokens = _THROUGHPUT_DECAY * self._tokens + tokens
        self._seconds = _THROUGHPUT_DECAY * self._seconds + seconds

    @property
    def measured(self) -> bool:
        return self._seconds > 0

    @property
    def tokens_per_s(self) -> float:
        return self._tokens / self._seconds if self._seconds > 0 else _INITIAL_TOKENS_PER_S

    def seconds_for(self, tokens: int) -> float:
        return tokens / self.tokens_per_s


@dataclass
class _Request:
    """State shared by the texts of one call. Times are on the time.monotonic() clock."""

    deadline: float | None  # the caller's
    promise: float | None = None  # answer (or refuse) by then
    usable_s: float = 0.0  # promise - admission time: what a retry with the same deadline could use
    sheddable: bool = True  # False when admitted to an idle model: nothing to blame but itself
    background: bool = False  # batched only after every interactive text waiting
    backlog_s: float = 0.0  # admitted work ahead of it when it was admitted, at the measured rate
    inference_s: float = 0.0
    batches: set[int] = field(default_factory=set)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def breaks_promise(self, finish: float) -> bool:
        return self.sheddable and self.promise is not None and finish > self.promise


@dataclass
class _Item:
    token_ids: list[int]
    request: _Request
    future: asyncio.Future[npt.NDArray[np.float32]]
    enqueued_at: float


@dataclass(frozen=True)
class Embedded:
    """Embeddings of one call, with where its time went (raw from the batcher; the embedding
    service normalizes and truncates them as the call asked)."""

    vectors: npt.NDArray[np.float32]
    token_counts: list[int]
    queue_s: float
    tokenize_s: float
    inference_s: float
    backlog_s: float


class Batcher:
    def __init__(
        self,
        encoder: EncoderBackend,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_tokens_in_flight: int,
        min_padding_efficiency: float = 0.0,
        admission_budget_share: float = 1.0,
        background_batch_tokens: int | None = None,
        inline_infer_tokens: int = 0,
        fill_row_buckets: bool = False,
    ) -> None:
        self._encoder = encoder
        # Engines fed bucketed shapes run a batch of 17 texts as 24 rows; cut to 16, it runs no
        # filler rows and the text left over leads the next batch (_take_batch).
        self._row_buckets = encoder.shape_buckets if fill_row_buckets else None
        self._inline_infer_tokens = inline_infer_tokens
        self._inline_turn = False  # a request ran on the loop in this turn of it (see _may_infer_inline)
        self._admission_budget_share = admission_budget_share
        self._min_padding_efficiency = min_padding_efficiency
        self._max_batch_size = max_batch_size
        self._max_batch_tokens = max_batch_tokens
        # While interactive calls are arriving, a batch of background texts only is cut smaller:
        # an interactive text that arrives meanwhile waits for that forward pass at most. With
        # no interactive traffic, background work gets full batches (the best throughput).
        self._background_batch_tokens = min(max_batch_tokens, background_batch_tokens or max_batch_tokens)
        self._last_interactive = -math.inf
        self._max_tokens_in_flight = max_tokens_in_flight
        self._pending: list[_Item] = []
        self._tokens_in_flight = 0
        self._wakeup = asyncio.Event()
        self._tokenizer_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tokenize")
        self._slots = max(1, encoder.concurrent_batches)
        self._inference_pool = ThreadPoolExecutor(max_workers=self._slots, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._batch_seq = 0
        self.throughput = Throughput()
        self._batch_seconds = 0.0  # recent forward-pass time, to tell if a waiting text can still make it

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for item in self._pending:
            if not item.future.done():
                item.future.cancel()
        self._pending.clear()
        self._tokenizer_pool.shutdown(wait=False, cancel_futures=True)
        self._inference_pool.shutdown(wait=True)

    async def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        """Token ids, on the loop for a few short texts (tens of microseconds: less than a
        thread hop costs an interactive query), on the tokenizer threads for anything larger."""
        if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
            return self._encoder.tokenize(texts, truncate)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_pool, self._encoder.tokenize, texts, truncate)

    async def windows(self, texts: list[str], size: int, overlap: int) -> list[Windows]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_pool, self._encoder.windows, texts, size, overlap)

    @property
    def special_tokens(self) -> int:
        return self._encoder.special_tokens

    def backlog_seconds(self, extra_tokens: int = 0) -> float:
        """Estimated time to finish everything admitted (plus `extra_tokens`) at the measured rate."""
        return self.throughput.seconds_for(self._tokens_in_flight + extra_tokens)

    def _admit(self, tokens: int, deadline: float | None) -> _Request:
        """The request's state, with its promise; raise Overloaded unless `tokens` more can be
        served by that promise and fit under the in-flight bound. An idle model admits anything."""
        now = time.monotonic()
        ahead = self._tokens_in_flight
        usable = 0.0 if deadline is None else (deadline - now) * self._admission_budget_share
        promise = None if deadline is None else now + usable
        request = _Request(
            deadline=deadline, promise=promise, usable_s=usable, sheddable=ahead > 0, backlog_s=self.backlog_seconds()
        )
        if ahead == 0:
            return request
        if ahead + tokens > self._max_tokens_in_flight:
            metrics.REJECTIONS.labels("overloaded").inc()
            raise Overloaded(
                f"the embedder holds {ahead} tokens in flight, at its limit of {self._max_tokens_in_flight}",
                retry_after_s=max(0.05, self.backlog_seconds()),
            )
        if promise is not None:
            needed = self.backlog_seconds(tokens)
            if needed > usable:
                metrics.REJECTIONS.labels("deadline").inc()
                raise Overloaded(
                    f"the embedder's queue needs about {needed:.1f}s to serve this request, "
                    f"more than its deadline leaves ({max(usable, 0):.1f}s usable)",
                    retry_after_s=max(0.05, needed - max(usable, 0.0)),
                )
        return request

    async def embed(
        self, token_ids: list[list[int]], deadline: float | None, tokenize_s: float, background: bool = False
    ) -> Embedded:
        """Embed pre-tokenized texts. Raises Overloaded at once when admission is refused, or
        later if the request's texts can no longer be served by its promise. Background texts
        are batched after every interactive one waiting."""
        request = self._admit(sum(map(len, token_ids)), deadline)
        request.background = background
        if not background:
            self._last_interactive = time.monotonic()
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        items = [_Item(ids, request, loop.create_future(), now) for ids in token_ids]
        self._tokens_in_flight += sum(len(item.token_ids) for item in items)
        inline = self._may_infer_inline(sum(map(len, token_ids)))
        if inline:
            self._infer_inline(items)
        else:
            self._pending.extend(items)
            metrics.QUEUE_SIZE.set(len(self._pending))
            metrics.BACKLOG_SECONDS.set(self.backlog_seconds())
            self._wakeup.set()
        try:
            if inline:  # the rows are there already: no loop turn to wait for
                rows = [item.future.result() for item in items]
            else:
                rows = await asyncio.gather(*(item.future for item in items))
        except BaseException:
            # Cancelled by the caller, or one text was shed: the rest are not worth computing.
            # The batcher drops items whose future is done.
            for item in items:
                item.future.cancel()
            raise
        # Queue time: how long this call was here while none of its texts was being computed,
        # i.e. behind other callers' work (not "wait of the first text", which batching by
        # length keeps short under any load). Batches mixing many calls keep it small even when
        # saturated, which is why clients size their concurrency from backlog_s instead.
        waited = max(0.0, time.perf_counter() - now - request.inference_s)
        return Embedded(
            vectors=np.stack(rows),
            token_counts=[len(ids) for ids in token_ids],
            queue_s=waited,
            tokenize_s=tokenize_s,
            inference_s=request.inference_s,
            backlog_s=request.backlog_s,
        )

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self._slots)
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            await slots.acquire()  # the batch is formed when a slot frees, from what waits then
            batch = self._take_batch()
            if not batch:
                slots.release()
                continue
            task = asyncio.create_task(self._infer(batch, len(self._running) + 1))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            task.add_done_callback(lambda _: slots.release())

    def _may_infer_inline(self, tokens: int) -> bool:
        """Whether this request may run on the loop (`inline_infer_tokens`): it is small, the
        model is free for it alone (nothing waits, no batch runs), and no other request ran on
        the loop in this turn of it. The last condition is what keeps a burst batched: calls
        that arrived while the loop was held by an inline pass reach here one after another in
        the next turns, each finding the model idle; without it they would run one by one (64
        callers of short queries got 3x fewer answers per second; with it, 15% fewer)."""
        return tokens <= self._inline_infer_tokens and not self._pending and not self._running and not self._inline_turn

    def _infer_inline(self, batch: list[_Item]) -> None:
        """Run a small batch on the event loop thread: the loop is held for one short forward
        pass, which no other batch could have used anyway."""
        self._inline_turn = True
        asyncio.get_running_loop().call_soon(self._end_inline_turn)
        started = time.perf_counter()
        for _ in batch:
            metrics.QUEUE_SECONDS.observe(0.0)
        try:
            vectors = self._encoder.encode([item.token_ids for item in batch])
        except Exception as exc:  # noqa: BLE001 - delivered to the waiting caller
            self._fail(batch, exc)
            return
        self._deliver(batch, vectors, time.perf_counter() - started, concurrent=1)

    def _end_inline_turn(self) -> None:
        self._inline_turn = False

    async def _infer(self, batch: list[_Item], concurrent: int) -> None:
        """Run one batch on an inference thread and hand each caller its row."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for item in batch:
            metrics.QUEUE_SECONDS.observe(started - item.enqueued_at)
        try:
            vectors = await loop.run_in_executor(
                self._inference_pool, self._encoder.encode, [item.token_ids for item in batch]
            )
        except Exception as exc:  # noqa: BLE001 - delivered to every waiting caller
            self._fail(batch, exc)
            return
        self._deliver(batch, vectors, time.perf_counter() - started, max(concurrent, len(self._running)))

    def _fail(self, batch: list[_Item], exc: Exception) -> None:
        self._finish(batch)
        for item in batch:
            if not item.future.done():
                item.future.set_exception(exc)

    def _deliver(self, batch: list[_Item], vectors: npt.NDArray[np.float32], elapsed: float, concurrent: int) -> None:
        """Account for a finished batch and hand each caller its row. Batches that overlapped
        shared the cores: the model's rate is the tokens over the time each had to itself (by
        the most batches running at its start or its end)."""
        self._observe(batch, elapsed, elapsed / concurrent)
        self._finish(batch)
        for row, item in enumerate(batch):
            if not item.future.done():
                item.future.set_result(vectors[row])

    def _take_batch(self) -> list[_Item]:
        """Remove and return the next batch: the oldest item plus its nearest neighbours in length."""
        monotonic_now = time.monotonic()
        live = []
        for item in self._pending:
            if item.future.done():
                self._drop(item, "abandoned")
            elif item.request.expired(monotonic_now):
                self._drop(item, "expired")
            elif item.request.breaks_promise(monotonic_now + self._batch_seconds):
                self._shed(item)
            else:
                live.append(item)
        if not live:
            self._pending = []
            metrics.QUEUE_SIZE.set(0)
            return []
        # Interactive texts first: the seed is the oldest of them when any waits, and background
        # texts only fill what room they leave.
        oldest = min(live, key=lambda item: (item.request.background, item.enqueued_at))
        seed_length = len(oldest.token_ids)
        interactive_traffic = monotonic_now - self._last_interactive < INTERACTIVE_TRAFFIC_WINDOW_S
        token_limit = (
            self._background_batch_tokens
            if oldest.request.background and interactive_traffic
            else self._max_batch_tokens
        )
        batch: list[_Item] = []
        longest = real = 0
        for background in (False, True):
            candidates = sorted(
                (item for item in live if item.request.background is background),
                key=lambda item: (abs(len(item.token_ids) - seed_length), item.enqueued_at),
            )
            for item in candidates:
                if len(batch) == self._max_batch_size:
                    break
                new_longest = max(longest, len(item.token_ids))
                padded = new_longest * (len(batch) + 1)
                if batch and padded > token_limit:
                    continue
                if batch and (real + len(item.token_ids)) / padded < self._min_padding_efficiency:
                    break  # candidates only get further from the seed's length from here on
                batch.append(item)
                longest, real = new_longest, real + len(item.token_ids)
        if self._row_buckets is not None:
            # The tail is the furthest in length from the seed (and background before that):
            # what is cut waits for the next batch, which it may well lead.
            batch = batch[: self._row_buckets.rows_at_most(len(batch))]
        chosen = {id(item) for item in batch}
        self._pending = [item for item in live if id(item) not in chosen]
        metrics.QUEUE_SIZE.set(len(self._pending))
        return batch

    def _drop(self, item: _Item, reason: str) -> None:
        self._tokens_in_flight -= len(item.token_ids)
        metrics.REJECTIONS.labels(reason).inc()
        if not item.future.done():
            item.future.cancel()

    def _shed(self, item: _Item) -> None:
        """Refuse a waiting text that can no longer be served by its request's promise."""
        self._tokens_in_flight -= len(item.token_ids)
        metrics.REJECTIONS.labels("shed").inc()
        retry_after = self.backlog_seconds() - item.request.usable_s
        item.future.set_exception(
            Overloaded(
                "the embedder's queue grew slower than estimated, and this request could no longer be "
                "served within its deadline",
                retry_after_s=max(0.05, retry_after),
            )
        )

    def _finish(self, batch: list[_Item]) -> None:
        self._tokens_in_flight -= sum(len(item.token_ids) for item in batch)
        metrics.BACKLOG_SECONDS.set(self.backlog_seconds())

    def _observe(self, batch: list[_Item], elapsed: float, exclusive: float) -> None:
        self._batch_seq += 1
        real = sum(len(item.token_ids) for item in batch)
        padded = len(batch) * max(len(item.token_ids) for item in batch)
        for item in batch:
            if self._batch_seq not in item.request.batches:
                item.request.batches.add(self._batch_seq)
                item.request.inference_s += elapsed
        self.throughput.observe(real, exclusive)
        self._batch_seconds = elapsed if self._batch_seq == 1 else 0.8 * self._batch_seconds + 0.2 * elapsed
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.BATCH_TOKENS.observe(padded)
        metrics.PADDING_EFFICIENCY.observe(real / padded)
        metrics.INFERENCE_SECONDS.observe(elapsed)
