"""The parts that bound what a request may cost before it is served: per-method size limits,
the read budget, failure counters and peer addresses (their end-to-end behaviour is in
tests/e2e/test_limits_before_work.py)."""

from __future__ import annotations

import asyncio

import pytest

from meshsearch_api.auth.failures import FailureCounter, peer_host, refuse_locked_peer
from meshsearch_api.auth.interceptor import OpenStreams
from meshsearch_api.request_limits import api_request_limits
from meshsearch_api.settings import ApiSettings
from meshsearch_common.errors import InvalidArgument, ResourceExhausted
from meshsearch_common.limits import Oversized, RequestLimits, bounded_deserializer
from meshsearch_common.read_budget import ReadBudget
from tests.clock import FakeClock


def test_a_message_over_its_methods_limit_is_not_parsed() -> None:
    parsed: list[bytes] = []

    def parse(raw: bytes) -> bytes:
        parsed.append(raw)
        return raw

    deserialize = bounded_deserializer(parse, limit=10)
    assert deserialize(b"x" * 10) == b"x" * 10
    over = deserialize(b"x" * 11)
    assert isinstance(over, Oversized) and parsed == [b"x" * 10]
    error = over.error()
    assert isinstance(error, InvalidArgument) and error.reason == "MESSAGE_TOO_LARGE"
    assert "11 bytes" in error.message and "limit of 10 bytes" in error.message


def test_the_apis_limits_follow_its_settings_and_never_pass_its_cap() -> None:
    limits = api_request_limits(ApiSettings(max_documents_per_request=4, max_text_bytes=1000, max_metadata_bytes=1000))
    index = limits.limit("/meshsearch.api.v1.DocumentService/IndexDocuments")
    assert 4 * 2000 < index < 4 * 2000 + 128 * 1024
    assert limits.limit("/meshsearch.api.v1.SearchService/Search") == limits.default_bytes
    capped = api_request_limits(ApiSettings(max_request_bytes=256 * 1024))
    assert capped.largest == 256 * 1024
    assert RequestLimits(100, {"/a/B": 500}).largest == 500


async def test_the_read_budget_makes_late_readers_wait_then_refuses_them() -> None:
    budget = ReadBudget(capacity=100, max_wait_s=0.05)
    first = await budget.hold(60, None)
    with pytest.raises(ResourceExhausted) as refused:
        await budget.hold(60, None)
    assert refused.value.reason == "SERVER_BUSY" and refused.value.retry_after_s
    waiting = asyncio.create_task(ReadBudget.hold(budget, 60, 5.0))
    await asyncio.sleep(0)
    budget.give_back(first)  # frees room: the waiter takes it
    assert await asyncio.wait_for(waiting, 1.0) == 60
    assert await ReadBudget(0).hold(10**12, None) == 0  # 0: no bound


async def test_a_reader_never_waits_past_its_own_deadline() -> None:
    budget = ReadBudget(capacity=10, max_wait_s=30.0)
    await budget.hold(10, None)
    with pytest.raises(ResourceExhausted):
        await asyncio.wait_for(budget.hold(1, time_left_s=0.01), 1.0)


def test_failures_lock_a_source_until_it_is_quiet_for_the_window() -> None:
    clock = FakeClock()
    counter = FailureCounter(max_failures=3, window_s=60, clock=clock)
    for _ in range(3):
        assert not counter.locked("ipv4:10.0.0.7")
        counter.record("ipv4:10.0.0.7")
    assert counter.locked("ipv4:10.0.0.7") and not counter.locked("ipv4:10.0.0.8")
    with pytest.raises(ResourceExhausted) as refused:
        refuse_locked_peer(counter, "ipv4:10.0.0.7")
    assert refused.value.reason == "TOO_MANY_FAILED_AUTHENTICATIONS" and refused.value.retry_after_s == 60
    clock.advance(61)
    assert not counter.locked("ipv4:10.0.0.7")
    assert not FailureCounter(0, 60).locked("anyone")  # 0: no limit


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:5301", "ipv4:10.0.0.7"),
        ("ipv6:[::1]:5301", "ipv6:[::1]"),
        ("ipv6:[fe80::1%eth0]:80", "ipv6:[fe80::1%eth0]"),
        ("unix:/run/meshsearch/api.sock", "unix:/run/meshsearch/api.sock"),
    ],
)
def test_a_peer_is_counted_by_its_address_not_its_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_a_key_holds_at_most_its_streams_and_frees_them_when_they_end() -> None:
    streams = OpenStreams(max_per_key=2)
    with streams.held("k1"), streams.held("k1"):
        with pytest.raises(ResourceExhausted) as refused, streams.held("k1"):
            pass
        assert refused.value.reason == "TOO_MANY_STREAMS"
        with streams.held("k2"):
            pass
    with streams.held("k1"), streams.held("k1"):
        pass
    with streams.held(""), streams.held(""), streams.held(""):  # auth off: no key, no bound
        pass
