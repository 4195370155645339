"""Deadlines, retry policy and error mapping of the one client layer."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from meshsearch.api.v1 import api_pb2
from meshsearch.embedder.v1 import embedder_pb2
from meshsearch_common import context
from meshsearch_common.client import UpstreamGuard, idempotent_methods, is_upstream_failure, service_config
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


def test_deadline_is_the_callers_remaining_time_clamped_to_the_policy() -> None:
    guard = UpstreamGuard("embedder", UpstreamPolicy(timeout_s=5))
    token = context.deadline.set(time.monotonic() + 1.0)
    try:
        assert 0.9 < guard.timeout_for(None) <= 1.0
    finally:
        context.deadline.reset(token)
    assert guard.timeout_for(None) == 5
    assert guard.timeout_for(0.5) == 0.5


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
    ],
)
def test_only_upstream_faults_count_against_the_breaker(code: grpc.StatusCode, counts: bool) -> None:
    assert is_upstream_failure(rpc_error(code)) is counts


def test_upstream_caller_errors_pass_through_and_faults_become_unavailable() -> None:
    assert isinstance(from_upstream("search", rpc_error(grpc.StatusCode.NOT_FOUND, "no such collection")), NotFound)
    assert isinstance(from_upstream("search", rpc_error(grpc.StatusCode.INVALID_ARGUMENT)), InvalidArgument)
    fault = from_upstream("search", rpc_error(grpc.StatusCode.INTERNAL, "disk on fire"))
    assert isinstance(fault, Unavailable)
    assert "search" in fault.message and "disk on fire" in fault.message


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
