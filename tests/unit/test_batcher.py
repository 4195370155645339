"""Dynamic batching with a fake encoder (the real model is exercised end to end)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from meshsearch_embedder.backend import EncoderBackend, ShapeBuckets
from meshsearch_embedder.batcher import Batcher, Overloaded


class RecordingEncoder(EncoderBackend):
    """Encodes each text as [length, first token]; records batches; can be held mid-batch."""

    def __init__(self) -> None:
        self.batches: list[list[list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set when a batch is inside encode()

    def tokenize(self, texts: list[str], truncate: bool) -> list[list[int]]:
        return [[ord(c) for c in text] for text in texts]

    def encode(self, batch: list[list[int]]) -> np.ndarray:
        self.entered.set()
        self.gate.wait(5)
        self.batches.append(batch)
        return np.array([[len(ids), ids[0]] for ids in batch], dtype=np.float32)


def make_batcher(encoder: RecordingEncoder, **limits: Any) -> Batcher:
    options = {"max_batch_size": 64, "max_batch_tokens": 10_000, "max_tokens_in_flight": 100_000} | limits
    return Batcher(encoder, **options)


@contextlib.asynccontextmanager
async def model_busy(batcher: Batcher, encoder: RecordingEncoder) -> AsyncIterator[None]:
    """Hold one batch inside the model while the body enqueues work, then let everything run:
    what the body enqueued is what the next batches are formed from."""
    encoder.gate.clear()
    encoder.entered.clear()
    blocker = asyncio.create_task(embed(batcher, ["x"]))
    assert await asyncio.to_thread(encoder.entered.wait, 5), "the first batch never reached the model"
    yield
    await queue_settled(batcher)
    encoder.gate.set()
    await blocker


async def queue_settled(batcher: Batcher, timeout_s: float = 5.0) -> None:
    """Wait until the texts the test enqueued (after tokenizing on a thread) are all waiting."""
    deadline = time.monotonic() + timeout_s
    sizes: list[int] = []
    while time.monotonic() < deadline:
        sizes = [*sizes[-2:], len(batcher._pending)]
        if len(sizes) == 3 and len(set(sizes)) == 1:
            return
        await asyncio.sleep(0.02)


async def embed(batcher: Batcher, texts: list[str], deadline: float | None = None) -> np.ndarray:
    token_ids = await batcher.tokenize(texts, truncate=True)
    return (await batcher.embed(token_ids, deadline, 0.0)).vectors


async def test_each_caller_gets_its_own_rows_in_order() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    await batcher.start()
    try:
        results = await asyncio.gather(embed(batcher, ["aa", "b"]), embed(batcher, ["cccc"]))
    finally:
        await batcher.stop()
    assert results[0].tolist() == [[2, ord("a")], [1, ord("b")]]
    assert results[1].tolist() == [[4, ord("c")]]


async def test_requests_arriving_while_the_model_is_busy_share_one_batch() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            waiting = [asyncio.create_task(embed(batcher, [f"text {i}"])) for i in range(20)]
        await asyncio.gather(*waiting)
    finally:
        await batcher.stop()
    assert [len(batch) for batch in encoder.batches] == [1, 20]


async def test_an_engine_with_row_buckets_gets_batches_that_fill_them_and_every_text_is_served() -> None:
    encoder = RecordingEncoder()
    encoder.shape_buckets = ShapeBuckets(max_tokens=256)
    batcher = make_batcher(encoder, fill_row_buckets=True)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            waiting = [asyncio.create_task(embed(batcher, [f"text {i:02}"])) for i in range(20)]
        results = await asyncio.gather(*waiting)
    finally:
        await batcher.stop()
    # 20 texts would run as 24 rows, 4 of them filler: 16 now, and the 4 left over next.
    assert [len(batch) for batch in encoder.batches] == [1, 16, 4]
    assert [int(r[0][0]) for r in results] == [7] * 20 and batcher._tokens_in_flight == 0


async def test_without_row_buckets_a_batch_takes_every_text_that_fits() -> None:
    encoder = RecordingEncoder()  # no shape buckets: torch, ONNX Runtime
    batcher = make_batcher(encoder, fill_row_buckets=True)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            waiting = [asyncio.create_task(embed(batcher, [f"text {i:02}"])) for i in range(20)]
        await asyncio.gather(*waiting)
    finally:
        await batcher.stop()
    assert [len(batch) for batch in encoder.batches] == [1, 20]


class ThreadRecordingEncoder(RecordingEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def encode(self, batch: list[list[int]]) -> np.ndarray:
        self.threads.append(threading.current_thread().name)
        return super().encode(batch)


async def test_a_short_request_to_an_idle_model_is_inferred_on_the_loop_without_thread_hops() -> None:
    encoder = ThreadRecordingEncoder()
    batcher = make_batcher(encoder, inline_infer_tokens=8)
    await batcher.start()
    try:
        short = await embed(batcher, ["query"])
        longer = await embed(batcher, ["a longer text"])
    finally:
        await batcher.stop()
    assert short.tolist() == [[5, ord("q")]] and longer.tolist() == [[13, ord("a")]]
    assert encoder.threads[0] == threading.current_thread().name
    assert encoder.threads[1].startswith("inference")
    assert batcher._tokens_in_flight == 0 and batcher.throughput.measured


async def test_a_short_request_arriving_while_a_batch_runs_waits_to_be_batched_not_inlined() -> None:
    encoder = ThreadRecordingEncoder()
    batcher = make_batcher(encoder, inline_infer_tokens=8)
    await batcher.start()
    try:
        encoder.gate.clear()
        encoder.entered.clear()
        running = asyncio.create_task(embed(batcher, ["a longer text"]))
        assert await asyncio.to_thread(encoder.entered.wait, 5)
        waiting = [asyncio.create_task(embed(batcher, [f"q{i}"])) for i in range(3)]
        await queue_settled(batcher)
        encoder.gate.set()
        await asyncio.gather(running, *waiting)
    finally:
        await batcher.stop()
    assert all(name.startswith("inference") for name in encoder.threads)
    assert [len(batch) for batch in encoder.batches] == [1, 3]


async def test_calls_arriving_in_the_turn_of_an_inline_pass_are_batched_not_run_one_by_one() -> None:
    encoder = ThreadRecordingEncoder()
    batcher = make_batcher(encoder, inline_infer_tokens=8)
    await batcher.start()
    try:
        results = await asyncio.gather(*(embed(batcher, [f"q{i}"]) for i in range(4)))
    finally:
        await batcher.stop()
    assert [r.tolist() for r in results] == [[[2, ord("q")]]] * 4
    assert encoder.threads[0] == threading.current_thread().name
    assert [len(batch) for batch in encoder.batches] == [1, 3]
    assert all(name.startswith("inference") for name in encoder.threads[1:])


class SlowStreamsEncoder(RecordingEncoder):
    """An engine with `streams` slots whose every batch takes 50 ms; records how many overlap."""

    def __init__(self, streams: int) -> None:
        super().__init__()
        self.concurrent_batches = streams
        self.inside = self.most_inside = 0
        self.lock = threading.Lock()

    def encode(self, batch: list[list[int]]) -> np.ndarray:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.05)
        with self.lock:
            self.inside -= 1
        return super().encode(batch)


@pytest.mark.parametrize("streams", [1, 2, 3])
async def test_the_batcher_keeps_as_many_batches_in_flight_as_the_engine_has_streams(streams: int) -> None:
    encoder = SlowStreamsEncoder(streams)
    batcher = make_batcher(encoder, max_batch_size=2)
    await batcher.start()
    try:
        results = await asyncio.gather(*(embed(batcher, [f"text {i}"]) for i in range(12)))
    finally:
        await batcher.stop()
    assert encoder.most_inside == streams
    assert sorted(int(r[0][0]) for r in results) == [len(f"text {i}") for i in range(12)]
    # Overlapping batches share the cores: each is credited the time it had to itself.
    assert batcher.throughput.tokens_per_s > 0.8 * streams * 2 * 6 / 0.05


async def test_batches_respect_the_size_and_padded_token_budget() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, max_batch_size=4, max_batch_tokens=40)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            texts = ["a" * 5] * 6 + ["b" * 20] * 3
            calls = [asyncio.create_task(embed(batcher, [text])) for text in texts]
        await asyncio.gather(*calls)
    finally:
        await batcher.stop()
    for batch in encoder.batches:
        assert len(batch) <= 4
        assert len(batch) * max(map(len, batch)) <= 40
    assert sum(len(batch) for batch in encoder.batches) == 10


async def test_the_oldest_text_always_goes_into_the_next_batch() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, max_batch_size=2)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            long_one = asyncio.create_task(embed(batcher, ["L" * 30]))
            await queue_settled(batcher)  # the long text is the oldest waiting
            shorts = [asyncio.create_task(embed(batcher, ["s" * 3])) for _ in range(6)]
        await asyncio.gather(long_one, *shorts)
    finally:
        await batcher.stop()
    assert any(len(ids) == 30 for ids in encoder.batches[1])


async def test_texts_whose_deadline_passed_are_dropped_before_inference() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            expired = asyncio.create_task(embed(batcher, ["too late"], deadline=time.monotonic() + 0.01))
        with pytest.raises(asyncio.CancelledError):
            await expired
    finally:
        await batcher.stop()
    assert all(len(ids) != len("too late") for batch in encoder.batches for ids in batch)


async def test_admission_past_the_token_bound_is_refused_at_once() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, max_tokens_in_flight=50)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            held = asyncio.create_task(embed(batcher, ["y" * 40]))
            await queue_settled(batcher)
            started = time.perf_counter()
            with pytest.raises(Overloaded) as raised:
                await embed(batcher, ["z" * 20])
            assert time.perf_counter() - started < 1.0
            assert raised.value.retry_after_s > 0
        await held
    finally:
        await batcher.stop()


async def test_a_text_that_would_make_the_batch_mostly_padding_waits_for_the_next_one() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, min_padding_efficiency=0.8)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            calls = [asyncio.create_task(embed(batcher, [text])) for text in ["a" * 10, "b" * 10, "c" * 11, "d" * 60]]
        await asyncio.gather(*calls)
    finally:
        await batcher.stop()
    lengths = [sorted(len(ids) for ids in batch) for batch in encoder.batches[1:]]
    assert lengths == [[10, 10, 11], [60]]


async def test_texts_of_a_cancelled_call_are_dropped_before_inference() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            abandoned = asyncio.create_task(embed(batcher, ["nobody waits for this"]))
            kept = asyncio.create_task(embed(batcher, ["kept"]))
            await queue_settled(batcher)
            abandoned.cancel()  # what gRPC does to the handler when its caller goes away
        await kept
    finally:
        await batcher.stop()
    embedded = [len(ids) for batch in encoder.batches for ids in batch]
    assert len("kept") in embedded and len("nobody waits for this") not in embedded


async def test_a_request_the_queue_cannot_serve_before_its_deadline_is_refused_at_once() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    batcher.throughput.observe(tokens=1000, seconds=1.0)  # 1,000 tokens/s
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            backlog = asyncio.create_task(embed(batcher, ["y" * 500]))  # half a second of work
            await queue_settled(batcher)
            started = time.perf_counter()
            with pytest.raises(Overloaded) as refused:
                await embed(batcher, ["z" * 100], deadline=time.monotonic() + 0.3)
            assert time.perf_counter() - started < 0.2
            assert 0.2 < refused.value.retry_after_s < 0.5  # about when that much backlog has drained
            assert "deadline" in str(refused.value)
            fits = asyncio.create_task(embed(batcher, ["w" * 100], deadline=time.monotonic() + 30))
            await queue_settled(batcher)
        await backlog
        assert (await fits).shape == (1, 2)
    finally:
        await batcher.stop()


async def test_an_idle_model_admits_a_request_whatever_its_deadline() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    batcher.throughput.observe(tokens=10, seconds=1.0)  # very slow: 10 tokens/s
    await batcher.start()
    try:
        result = await embed(batcher, ["x" * 50], deadline=time.monotonic() + 2)
    finally:
        await batcher.stop()
    assert result.shape == (1, 2)


def test_tiny_batches_do_not_drag_down_the_throughput_estimate() -> None:
    from meshsearch_embedder.batcher import Throughput

    throughput = Throughput()
    throughput.observe(tokens=4000, seconds=1.0)  # a full batch: 4,000 tokens/s
    for _ in range(10):
        throughput.observe(tokens=5, seconds=0.01)  # single short queries: 500 tokens/s each
    assert throughput.tokens_per_s > 3000


async def test_a_request_whose_promise_can_no_longer_be_kept_is_refused_not_left_to_time_out() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, admission_budget_share=0.8)
    batcher.throughput.observe(tokens=1_000_000, seconds=1.0)  # an estimate far too optimistic
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            late = asyncio.create_task(embed(batcher, ["q" * 10], deadline=time.monotonic() + 2.0))
            await queue_settled(batcher)
            await asyncio.sleep(1.7)  # the model stays busy past the request's promise (1.6 s), not its deadline
        with pytest.raises(Overloaded) as refused:
            await late
    finally:
        await batcher.stop()
    assert "could no longer be served" in str(refused.value)
    assert all(len(ids) != 10 for batch in encoder.batches for ids in batch)  # never computed


async def test_queue_time_is_the_wait_behind_other_work_not_behind_the_calls_own_batches() -> None:
    class SlowEncoder(RecordingEncoder):
        def encode(self, batch: list[list[int]]) -> np.ndarray:
            time.sleep(0.2)
            return super().encode(batch)

    batcher = make_batcher(SlowEncoder(), max_batch_size=1)
    await batcher.start()
    try:
        token_ids = await batcher.tokenize(["aa", "bb", "cc"], truncate=True)
        result = await batcher.embed(token_ids, None, 0.0)  # three batches, one after the other
    finally:
        await batcher.stop()
    assert result.inference_s >= 0.6
    assert result.queue_s < 0.1  # the idle model started on this call at once


async def test_queue_time_counts_the_wait_behind_another_calls_work() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            waiting = asyncio.create_task(batcher.embed(await batcher.tokenize(["zz"], truncate=True), None, 0.0))
            await queue_settled(batcher)
            await asyncio.sleep(0.3)  # another call's batch holds the model meanwhile
        result = await waiting
    finally:
        await batcher.stop()
    assert result.queue_s >= 0.3


async def test_each_call_learns_the_work_admitted_ahead_of_it() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder)
    batcher.throughput.observe(tokens=1000, seconds=1.0)  # 1,000 tokens/s
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):  # the blocker's one token is in flight
            ahead = asyncio.create_task(embed(batcher, ["y" * 499]))
            await queue_settled(batcher)
            behind = asyncio.create_task(batcher.embed(await batcher.tokenize(["z"], truncate=True), None, 0.0))
            await queue_settled(batcher)
        await ahead
        result = await behind
    finally:
        await batcher.stop()
    assert result.backlog_s == pytest.approx(0.5, rel=0.05)  # 500 tokens ahead at 1,000 tokens/s


async def embed_background(batcher: Batcher, texts: list[str]) -> np.ndarray:
    token_ids = await batcher.tokenize(texts, truncate=True)
    return (await batcher.embed(token_ids, None, 0.0, background=True)).vectors


async def test_interactive_texts_are_batched_before_background_ones() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, max_batch_size=4, background_batch_tokens=10_000)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            bulk = asyncio.create_task(embed_background(batcher, [f"b{i}" for i in range(8)]))
            await queue_settled(batcher)
            query = asyncio.create_task(embed(batcher, ["q1", "q2"]))
        await asyncio.gather(bulk, query)
    finally:
        await batcher.stop()
    first_after_blocker = [chr(ids[0]) for ids in encoder.batches[1]]
    assert first_after_blocker[:2] == ["q", "q"]  # the queries, though enqueued last
    assert sorted(first_after_blocker[2:]) == ["b", "b"]  # background texts fill the room left


async def test_passes_of_background_texts_alone_are_cut_smaller() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, max_batch_tokens=1000, background_batch_tokens=20)
    await batcher.start()
    try:
        async with model_busy(batcher, encoder):
            bulk = asyncio.create_task(embed_background(batcher, ["abcd"] * 12))
        await bulk
    finally:
        await batcher.stop()
    assert [len(batch) for batch in encoder.batches[1:]] == [5, 5, 2]  # 5 x 4 padded tokens = 20


async def test_without_interactive_traffic_background_passes_are_full_size() -> None:
    encoder = RecordingEncoder()
    batcher = make_batcher(encoder, max_batch_tokens=1000, background_batch_tokens=20)
    await batcher.start()
    try:
        encoder.gate.clear()
        blocker = asyncio.create_task(embed_background(batcher, ["x"]))
        assert await asyncio.to_thread(encoder.entered.wait, 5)
        bulk = asyncio.create_task(embed_background(batcher, ["abcd"] * 12))
        await queue_settled(batcher)
        encoder.gate.set()
        await asyncio.gather(blocker, bulk)
    finally:
        await batcher.stop()
    assert [len(batch) for batch in encoder.batches[1:]] == [12]
