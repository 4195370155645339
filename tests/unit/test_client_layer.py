"""Deadlines, retry policy and error mapping of the one client layer."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from meshsearch.api.v1 import api_pb2
from meshsearch.embedder.v1 import embedder_pb2
from meshsearch_common import context
from meshsearch_common.client import UpstreamGuard, is_upstream_failure, service_config
from meshsearch_common.contracts import idempotent_methods
from meshsearch_common.errors import InvalidArgument, NotFound, Unavailable, from_upstream
from meshsearch_common.settings import UpstreamPolicy

EMBEDDER = embedder_pb2.DESCRIPTOR.services_by_name["EmbedderService"]


def rpc_error(code: grpc.StatusCode, details: str = "boom") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_only_methods_marked_idempotent_in_the_contract_are_retried() -> None:
    assert set(idempotent_methods(EMBEDDER)) == {"Embed", "Info", "Tokenize"}  # not the EmbedStream stream
    documents = api_pb2.DESCRIPTOR.services_by_name["CollectionService"]
    assert "CreateCollection" not in idempotent_methods(documents)


def test_service_config_retries_unavailable_with_backoff_and_throttling() -> None:
    config = json.loads(service_config([EMBEDDER], UpstreamPolicy(retry_max_attempts=3)))
    policy = config["methodConfig"][0]["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 3
    assert config["retryThrottling"]["maxTokens"] > 0
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]


def within_deadline(seconds: float):
    """Run the body as if serving an inbound call with `seconds` left."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        token = context.deadline.set(time.monotonic() + seconds)
        try:
            yield
        finally:
            context.deadline.reset(token)

    return scope()


def test_an_upstream_gets_the_callers_remaining_time_less_a_reserve_never_the_policy_clamp() -> None:
    guard = UpstreamGuard("embedder", UpstreamPolicy(timeout_s=5, deadline_reserve_s=0.1))
    with within_deadline(120):
        assert 119.8 < guard.timeout_for(None) <= 119.9  # a long write is not cut to the policy's 5 s
    with within_deadline(1.0):
        assert 0.85 < guard.timeout_for(None) <= 0.9
    with within_deadline(0.2):
        assert 0.1 < guard.timeout_for(None) <= 0.15  # the reserve takes at most a quarter
        assert guard.timeout_for(0.05) == 0.05  # an explicit, shorter timeout still wins
    assert guard.timeout_for(None) == 5  # outside any inbound call: the policy's timeout


def test_a_timeout_counts_against_the_breaker_only_when_the_upstream_had_a_fair_budget() -> None:
    guard = UpstreamGuard("embedder", UpstreamPolicy(breaker_min_budget_s=0.25))
    timed_out = rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)
    assert guard.failure_judge(2.0)(timed_out) is True
    assert guard.failure_judge(0.05)(timed_out) is False
    assert guard.failure_judge(0.05)(rpc_error(grpc.StatusCode.UNAVAILABLE)) is True


def test_reads_and_writes_are_told_apart_by_the_contract() -> None:
    from meshsearch_common.deadlines import inbound_deadline, is_read_method

    assert is_read_method("/meshsearch.api.v1.SearchService/Search")
    assert not is_read_method("/meshsearch.api.v1.DocumentService/IndexDocuments")
    assert not is_read_method("/no.such.Service/Method")
    now = time.monotonic()
    assert inbound_deadline("/meshsearch.api.v1.SearchService/Search", None, 10, 120) - now == pytest.approx(10, abs=1)
    write = inbound_deadline("/meshsearch.api.v1.DocumentService/IndexDocuments", None, 10, 120)
    assert write - now == pytest.approx(120, abs=1)
    assert inbound_deadline("/meshsearch.api.v1.SearchService/Search", 3, 10, 120) - now == pytest.approx(3, abs=1)


def test_a_call_whose_caller_has_no_time_left_is_not_sent() -> None:
    guard = UpstreamGuard("embedder", UpstreamPolicy())
    token = context.deadline.set(time.monotonic() - 0.01)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            guard.timeout_for(None)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        context.deadline.reset(token)


@pytest.mark.parametrize(
    ("code", "counts"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.INTERNAL, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.NOT_FOUND, False),
        (grpc.StatusCode.FAILED_PRECONDITION, False),
        (grpc.StatusCode.UNAUTHENTICATED, False),
        (grpc.StatusCode.PERMISSION_DENIED, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),  # a healthy upstream refusing work it cannot finish
    ],
)
def test_only_upstream_faults_count_against_the_breaker(code: grpc.StatusCode, counts: bool) -> None:
    assert is_upstream_failure(rpc_error(code)) is counts


def test_upstream_caller_errors_pass_through_and_faults_become_unavailable() -> None:
    assert isinstance(from_upstream("search", rpc_error(grpc.StatusCode.NOT_FOUND, "no such collection")), NotFound)
    assert isinstance(from_upstream("search", rpc_error(grpc.StatusCode.INVALID_ARGUMENT)), InvalidArgument)
    fault = from_upstream("search", rpc_error(grpc.StatusCode.INTERNAL, "internal error in /x; see server logs"))
    assert isinstance(fault, Unavailable)
    assert "search" in fault.message and "INTERNAL" in fault.message
    # An upstream that drops the call (shutting down) is a retryable fault, not our caller's cancel.
    dropped = from_upstream("embedder", rpc_error(grpc.StatusCode.CANCELLED))
    assert isinstance(dropped, Unavailable) and "embedder" in dropped.message


def test_overload_retry_info_survives_the_hop_to_our_caller() -> None:
    from meshsearch_common.errors import STATUS_DETAILS_KEY, ResourceExhausted, status_details

    details = status_details(ResourceExhausted("model is overloaded", retry_after_s=0.25))
    assert details is not None
    upstream_error = grpc.aio.AioRpcError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((STATUS_DETAILS_KEY, details.SerializeToString())),
        "model is overloaded",
    )
    mapped = from_upstream("embedder", upstream_error)
    assert isinstance(mapped, ResourceExhausted)
    assert mapped.retry_after_s == 0.25
    assert "embedder" in mapped.message


CALLER_CODES = [
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.CANCELLED,
]


@pytest.mark.parametrize("code", CALLER_CODES, ids=lambda code: code.name)
def test_every_caller_error_passes_through_with_its_code_and_message_and_never_feeds_the_breaker(
    code: grpc.StatusCode,
) -> None:
    mapped = from_upstream("search", rpc_error(code, "what the caller must fix"))
    if code == grpc.StatusCode.CANCELLED:
        # A cancel by our own caller cancels this handler instead; an upstream's CANCELLED means
        # it dropped the call (shutting down): UNAVAILABLE to our caller, still not a breaker fault.
        assert mapped.code == grpc.StatusCode.UNAVAILABLE
    else:
        assert mapped.code == code
        assert mapped.message == "what the caller must fix"
    assert not is_upstream_failure(rpc_error(code))


def test_the_caller_error_table_is_exactly_the_eight_codes() -> None:
    from meshsearch_common.errors import CALLER_ERROR_CODES

    assert CALLER_ERROR_CODES == frozenset(CALLER_CODES)


def test_an_unreachable_upstream_is_named_without_its_address_and_a_meshsearch_reason_passes_on() -> None:
    """gRPC's own words for a refused connection hold the upstream's address, which no caller
    should learn; a meshsearch server's own UNAVAILABLE (with its ErrorInfo) passes on as written."""
    from meshsearch_common.errors import STATUS_DETAILS_KEY, status_details

    transport = from_upstream(
        "search",
        rpc_error(
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:10.0.3.7:50052: Connection refused",
        ),
    )
    assert isinstance(transport, Unavailable) and transport.message.startswith("search is unavailable")
    assert "10.0.3.7" not in transport.message and "50052" not in transport.message
    assert transport.reason == "SEARCH_UNAVAILABLE"
    ours = Unavailable("shard 1 is unavailable: retry shortly", reason="SHARD_UNAVAILABLE")
    written = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata((STATUS_DETAILS_KEY, status_details(ours).SerializeToString())),
        ours.message,
    )
    relayed = from_upstream("search", written)
    assert "shard 1 is unavailable" in relayed.message and relayed.reason == "SHARD_UNAVAILABLE"
