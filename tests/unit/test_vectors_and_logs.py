"""Wire format of vectors, and structured logs carrying the request id."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from meshsearch_common import context, vectors
from meshsearch_common.errors import InvalidArgument
from meshsearch_common.logs import JsonFormatter


def test_vectors_round_trip_as_little_endian_float32() -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    data = vectors.pack(matrix)
    assert data[:4] == np.float32(0).tobytes() and len(data) == 48
    assert np.array_equal(vectors.unpack(data, 4), matrix)
    assert np.frombuffer(data, dtype="<f4")[1] == pytest.approx(1 / 7)


@pytest.mark.parametrize(
    ("data", "dimension", "message"),
    [
        (b"\x00" * 12, 4, "not a positive multiple"),
        (b"", 4, "not a positive multiple"),
        (np.array([np.nan, 1], dtype="<f4").tobytes(), 2, "NaN"),
        (b"\x00" * 8, 0, "positive"),
    ],
)
def test_malformed_vectors_are_invalid_arguments(data: bytes, dimension: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        vectors.unpack(data, dimension)


def test_log_lines_are_json_with_the_current_request_id_and_extras() -> None:
    record = logging.LogRecord("meshsearch.test", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.upstream = "embedder"
    token = context.request_id.set("req-123")
    try:
        line = json.loads(JsonFormatter("api").format(record))
    finally:
        context.request_id.reset(token)
    assert line["msg"] == "hello world"
    assert line["request_id"] == "req-123"
    assert line["service"] == "api" and line["upstream"] == "embedder" and line["level"] == "info"


def test_request_id_survives_the_hop_to_the_background_log_writer(capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from meshsearch_common.logs import configure_logging

    configure_logging("test", "info")
    token = context.request_id.set("req-queued")
    try:
        logging.getLogger("meshsearch.test").info("queued line", extra={"n": 1})
    finally:
        context.request_id.reset(token)
    deadline = time.monotonic() + 2
    lines: list[dict[str, object]] = []
    while time.monotonic() < deadline and not lines:
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if "queued line" in x]
        time.sleep(0.02)
    assert lines and lines[0]["request_id"] == "req-queued" and lines[0]["n"] == 1
    logging.getLogger().handlers.clear()


def test_the_background_writer_keeps_every_line_in_order(capsys: pytest.CaptureFixture[str]) -> None:
    """Lines are written in batches; none may be lost or reordered, including those still
    queued when logging is reconfigured (which stops the old writer after a final drain)."""
    from meshsearch_common.logs import configure_logging

    configure_logging("test", "info")
    for n in range(200):
        logging.getLogger("meshsearch.test").info("numbered", extra={"n": n})
    configure_logging("test", "info")  # stops the first writer: it must drain what is queued
    numbers = [json.loads(x)["n"] for x in capsys.readouterr().err.splitlines() if '"numbered"' in x]
    assert numbers == list(range(200))
    logging.getLogger().handlers.clear()
