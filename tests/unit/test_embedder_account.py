"""The embedder's account benchmarks read from its /metrics: the names it scrapes are the ones
the embedder registers, and two readings subtract to what happened between them."""

from __future__ import annotations

import pytest
from prometheus_client import start_http_server

from meshsearch_embedder import metrics
from meshsearch_harness.embedder_account import read_embedder_account


def test_two_readings_subtract_to_the_passes_texts_and_seconds_between_them() -> None:
    server, thread = start_http_server(0, addr="127.0.0.1")
    try:
        port = server.server_port
        before = read_embedder_account(port)
        for rows, seconds, real, padded in ((3, 0.1, 30, 60), (5, 0.3, 100, 100)):
            metrics.BATCH_SIZE.observe(rows)
            metrics.BATCH_TOKENS.observe(padded)
            metrics.PADDING_EFFICIENCY.observe(real / padded)
            metrics.INFERENCE_SECONDS.observe(seconds)
        metrics.TOKENIZE_SECONDS.observe(0.02)
        used = read_embedder_account(port) - before
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert used.passes == 2
    assert used.texts == 8
    assert used.inference_s == pytest.approx(0.4)
    assert used.engine_texts_per_s == pytest.approx(20.0)
    assert used.rows_per_pass == 4
    assert used.padded_tokens == 160
    assert used.padding_efficiency == pytest.approx(0.75)
    assert used.tokenize_s == pytest.approx(0.02)
    assert used.tokenize_calls == 1
