"""API keys, roles, tenant isolation, rate limits and quotas, against two real api replicas
sharing one Redis (see auth_stack). The contract is walked by server reflection, so an RPC
added without an access rule or a tenant check fails these tests."""

from __future__ import annotations

import json
import os
import queue
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, duration_pb2, message_factory, timestamp_pb2
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.client import error_details
from meshsearch_api.auth.interceptor import RECHECK_S
from meshsearch_api.auth.permissions import METHOD_ROLES, OPEN_SERVICES
from meshsearch_cli.stack import EmbeddedStack, Ports
from meshsearch_harness.secured import (
    CACHE_TTL_S,
    FEW_JOBS_TENANT,
    LARGE_TENANT,
    LARGE_TENANT_MAX_DOCUMENTS,
    MAX_DOCUMENTS,
    MAX_INGEST_BYTES,
    SecuredApis,
    bearer,
)
from tests import waiting
from tests.e2e import raw_http2
from tests.e2e.scrape import sample

TIMEOUT_S = 30


def tenant_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def served_methods(target: str) -> list[MethodDescriptor]:
    """Every method the server offers, as it describes itself through reflection."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        services = [pool.FindServiceByName(name) for name in database.get_services() if name not in OPEN_SERVICES]
        return [method for service in services for method in service.methods]


def invoke(
    channel: grpc.Channel, method: MethodDescriptor, request: Any, metadata: tuple[tuple[str, str], ...] = ()
) -> Any:
    """Call any method generically: one request (a stream of one when the method takes a
    stream), and the first response of a response stream."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    response_class = message_factory.GetMessageClass(method.output_type)
    kinds: dict[tuple[bool, bool], Callable[..., Any]] = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
        (True, True): channel.stream_stream,
    }
    callable_ = kinds[(method.client_streaming, method.server_streaming)](
        path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=response_class.FromString
    )
    sent = iter([request]) if method.client_streaming else request
    answer = callable_(sent, metadata=metadata, timeout=TIMEOUT_S)
    return next(iter(answer)) if method.server_streaming else answer


def failure(call: Callable[..., Any], *args: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args)
    return caught.value


def reason_of(error: grpc.RpcError) -> str:
    return str(error_details(error)["ErrorInfo"].reason)


# --- authentication over the whole contract --------------------------------------------------


def test_every_served_method_has_an_access_rule(secured: SecuredApis) -> None:
    methods = served_methods(secured.target())
    paths = {f"/{m.containing_service.full_name}/{m.name}" for m in methods}
    assert len(paths) >= 21  # 18 data RPCs and 3 of KeyService
    assert paths <= set(METHOD_ROLES), sorted(paths - set(METHOD_ROLES))


@pytest.mark.parametrize(
    ("credentials", "reason"),
    [
        ((), "MISSING_CREDENTIALS"),
        (bearer("msk_0123456789abcdef_" + "A" * 43), "INVALID_API_KEY"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "MALFORMED_CREDENTIALS"),
    ],
    ids=["no-key", "unknown-key", "not-bearer"],
)
def test_every_rpc_refuses_a_caller_without_a_valid_key(
    secured: SecuredApis, credentials: tuple[tuple[str, str], ...], reason: str
) -> None:
    methods = served_methods(secured.target())
    with grpc.insecure_channel(secured.target()) as channel:
        for method in methods:
            request = message_factory.GetMessageClass(method.input_type)()
            error = failure(invoke, channel, method, request, credentials)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (method.full_name, error)
            assert reason_of(error) == reason, method.full_name


def test_health_and_reflection_stay_open_for_probes(secured: SecuredApis) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(secured.target()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)  # type: ignore[attr-defined]
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "value",
    [
        "Bearer " + "x" * 600,  # past the length limit
        "Bearer msk_zzzzzzzzzzzzzzzz_" + "A" * 43,  # a key id that is not hex
        "Bearer ",
        "Bearer msk_0123456789abcdef_" + "A" * 43 + " trailing",
        "Token abc",
        "B" * 4000,
    ],
)
def test_malformed_credentials_get_only_documented_codes(secured: SecuredApis, value: str) -> None:
    with grpc.insecure_channel(secured.target()) as channel:
        stub = pb_grpc.CollectionServiceStub(channel)
        try:
            stub.ListCollections(pb.ListCollectionsRequest(), metadata=(("authorization", value),), timeout=TIMEOUT_S)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
            assert reason_of(error) in {"MALFORMED_CREDENTIALS", "INVALID_API_KEY"}
        except ValueError as refused_by_client:  # grpc refuses to send some values at all
            assert "metadata" in str(refused_by_client).lower()
        else:
            pytest.fail("a malformed credential was accepted")


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer msk_0123456789abcdef_" + "é".encode() * 21 + b"A",  # non-ASCII bytes
        b"Bearer \xff\xfe\x00\x01",  # invalid UTF-8, a NUL
        b"Bearer msk_0123456789abcdef_" + b"A" * 43 + b"\r\nx-injected: 1",
        b"\x80" * 300,
        b"bearer\tmsk_0123456789abcdef_" + b"A" * 43,
    ],
)
def test_raw_hostile_authorization_bytes_get_only_documented_codes(secured: SecuredApis, value: bytes) -> None:
    """Bytes that gRPC clients refuse to send, sent on raw HTTP/2: the server refuses the
    call (UNAUTHENTICATED, or gRPC's own header validation resetting the stream), never runs it."""
    port = secured.replicas[0].ports.api
    path = "/meshsearch.api.v1.CollectionService/ListCollections"
    status, message = raw_http2.call(port, path, [(b"authorization", value)])
    documented = {str(grpc.StatusCode.UNAUTHENTICATED.value[0]), "RESET", str(grpc.StatusCode.INTERNAL.value[0])}
    assert status in documented, (status, message)
    if status == str(grpc.StatusCode.INTERNAL.value[0]):
        assert "metadata" in message.lower() or "header" in message.lower(), message  # the transport's, not a handler's


def test_oversized_metadata_is_refused_by_the_transport(secured: SecuredApis) -> None:
    """Past gRPC's 8 KiB default header limit the server never sees the call."""
    with grpc.insecure_channel(secured.target()) as channel:
        stub = pb_grpc.CollectionServiceStub(channel)
        error = failure(
            lambda: stub.ListCollections(
                pb.ListCollectionsRequest(), metadata=(("authorization", "Bearer " + "y" * 20_000),), timeout=5
            )
        )
    assert error.code() in {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL}


# --- roles --------------------------------------------------------------------------------------


def test_roles_are_enforced_and_the_bootstrap_key_reaches_no_data(secured: SecuredApis) -> None:
    tenant = tenant_name()
    reader = secured.new_key(tenant, pb.ROLE_READ)
    writer = secured.new_key(tenant, pb.ROLE_WRITE)
    with grpc.insecure_channel(secured.target()) as channel:
        collections = pb_grpc.CollectionServiceStub(channel)
        create = pb.CreateCollectionRequest(collection=pb.Collection(name="docs"))
        denied = failure(lambda: collections.CreateCollection(create, metadata=bearer(reader), timeout=TIMEOUT_S))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(denied) == "MISSING_ROLE"
        assert "write" in (denied.details() or "")
        collections.CreateCollection(create, metadata=bearer(writer), timeout=TIMEOUT_S)
        read = failure(
            lambda: collections.ListCollections(pb.ListCollectionsRequest(), metadata=bearer(writer), timeout=30)
        )
        assert read.code() == grpc.StatusCode.PERMISSION_DENIED
        listed = collections.ListCollections(pb.ListCollectionsRequest(), metadata=bearer(reader), timeout=30)
        assert [c.name for c in listed.collections] == ["docs"]
        boot = failure(
            lambda: collections.ListCollections(
                pb.ListCollectionsRequest(), metadata=bearer(secured.bootstrap_key), timeout=30
            )
        )
        assert boot.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(boot) == "BOOTSTRAP_KEY_MANAGES_KEYS_ONLY"
        keys = pb_grpc.KeyServiceStub(channel)
        not_admin = failure(lambda: keys.ListApiKeys(pb.ListApiKeysRequest(), metadata=bearer(reader), timeout=30))
        assert not_admin.code() == grpc.StatusCode.PERMISSION_DENIED


def test_an_admin_manages_its_own_tenants_keys_only(secured: SecuredApis) -> None:
    tenant, other = tenant_name(), tenant_name()
    admin = secured.new_key(tenant, pb.ROLE_ADMIN)
    secured.new_key(other, pb.ROLE_READ)
    with grpc.insecure_channel(secured.target()) as channel:
        keys = pb_grpc.KeyServiceStub(channel)
        made = keys.CreateApiKey(
            pb.CreateApiKeyRequest(roles=[pb.ROLE_READ], name="reporting"), metadata=bearer(admin), timeout=30
        )
        assert made.api_key.tenant == tenant and made.secret.startswith("msk_")
        listed = keys.ListApiKeys(pb.ListApiKeysRequest(), metadata=bearer(admin), timeout=30).api_keys
        assert {k.key_id for k in listed} >= {made.api_key.key_id} and all(k.tenant == tenant for k in listed)
        assert all(made.secret not in str(k) for k in listed)
        foreign = failure(
            lambda: keys.ListApiKeys(pb.ListApiKeysRequest(tenant=other), metadata=bearer(admin), timeout=30)
        )
        assert foreign.code() == grpc.StatusCode.PERMISSION_DENIED
        bad = failure(lambda: keys.CreateApiKey(pb.CreateApiKeyRequest(), metadata=bearer(admin), timeout=30))
        assert (
            bad.code() == grpc.StatusCode.INVALID_ARGUMENT
            and error_details(bad)["BadRequest"].field_violations[0].field == "roles"
        )


def test_a_revoked_key_is_refused_by_every_replica_within_the_cache_ttl(secured: SecuredApis) -> None:
    tenant = tenant_name()
    admin = secured.new_key(tenant, pb.ROLE_ADMIN)
    victim = secured.new_key(tenant, pb.ROLE_READ)
    request = pb.ListCollectionsRequest()
    with grpc.insecure_channel(secured.target(0)) as first, grpc.insecure_channel(secured.target(1)) as second:
        for channel in (first, second):  # both replicas now hold the key as verified
            pb_grpc.CollectionServiceStub(channel).ListCollections(request, metadata=bearer(victim), timeout=30)
        key_id = victim.split("_")[1]
        pb_grpc.KeyServiceStub(first).RevokeApiKey(
            pb.RevokeApiKeyRequest(key_id=key_id), metadata=bearer(admin), timeout=30
        )
        revoked_at = time.monotonic()
        at_once = failure(
            lambda: pb_grpc.CollectionServiceStub(first).ListCollections(request, metadata=bearer(victim), timeout=30)
        )
        assert at_once.code() == grpc.StatusCode.UNAUTHENTICATED  # the replica that revoked it forgets at once

        def refused_by_second() -> bool:
            try:
                pb_grpc.CollectionServiceStub(second).ListCollections(request, metadata=bearer(victim), timeout=30)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED
                return True
            return False

        waiting.until_sync(refused_by_second, timeout_s=CACHE_TTL_S + 2, what="the other replica refuses the key")
        assert time.monotonic() - revoked_at < CACHE_TTL_S + 2


def test_revocation_stops_an_open_upload_within_the_cache_ttl(secured: SecuredApis) -> None:
    """A StartIngest stream opened with a key is checked again as its batches arrive: once the
    key is revoked (on another replica, so only the cache TTL brings the news), the stream ends
    UNAUTHENTICATED instead of acknowledging batches for good."""
    tenant = tenant_name()
    admin, writer = secured.new_key(tenant, pb.ROLE_ADMIN), secured.new_key(tenant)
    with grpc.insecure_channel(secured.target(0)) as first, grpc.insecure_channel(secured.target(1)) as second:
        pb_grpc.CollectionServiceStub(second).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="upload")), metadata=bearer(writer), timeout=30
        )
        outbox: queue.Queue[pb.StartIngestRequest | None] = queue.Queue()
        responses = pb_grpc.IngestServiceStub(second).StartIngest(
            iter(outbox.get, None), metadata=bearer(writer), timeout=60
        )
        outbox.put(pb.StartIngestRequest(start=pb.IngestOptions(collection="upload")))
        assert next(responses).job_id
        sent = 0

        def send_batch() -> pb.StartIngestResponse:
            nonlocal sent
            document = pb.Document(id=f"d{sent}", text=f"document {sent}")
            outbox.put(pb.StartIngestRequest(batch=pb.IngestBatch(first_sequence=sent, documents=[document])))
            sent += 1
            answer: pb.StartIngestResponse = next(responses)
            return answer

        assert send_batch().acknowledged == 1
        pb_grpc.KeyServiceStub(first).RevokeApiKey(
            pb.RevokeApiKeyRequest(key_id=writer.split("_")[1]), metadata=bearer(admin), timeout=30
        )
        revoked_at = time.monotonic()
        try:
            with pytest.raises(grpc.RpcError) as stopped:
                while True:
                    send_batch()
                    assert time.monotonic() - revoked_at < CACHE_TTL_S + RECHECK_S + 1.5, "batches still acknowledged"
                    time.sleep(0.1)  # an uploader's pace
        finally:
            outbox.put(None)
        assert stopped.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_details(stopped.value)["ErrorInfo"].reason == "INVALID_API_KEY"


# --- tenant isolation -------------------------------------------------------------------------


def _start_job(channel: grpc.Channel, key: str, collection: str, priority: Any = pb.JOB_PRIORITY_NORMAL) -> str:
    stub = pb_grpc.IngestServiceStub(channel)
    requests = iter([pb.StartIngestRequest(start=pb.IngestOptions(collection=collection, priority=priority))])
    first = next(iter(stub.StartIngest(requests, metadata=bearer(key), timeout=TIMEOUT_S)))
    return first.job_id


def _probes(collection: str, job_id: str, key_id: str) -> dict[str, Any]:
    """For every data method and KeyService's revoke: a request naming `collection`, `job_id`
    or `key_id`."""
    doc = pb.Document(id="x", text="probe")
    return {
        "CreateCollection": None,  # creates in the caller's own namespace: checked apart
        "GetCollection": pb.GetCollectionRequest(name=collection),
        "ListCollections": None,  # checked apart: lists only the caller's
        "DeleteCollection": pb.DeleteCollectionRequest(name=collection),
        "IndexDocuments": pb.IndexDocumentsRequest(collection=collection, documents=[doc]),
        "GetDocuments": pb.GetDocumentsRequest(collection=collection, ids=["a"]),
        "DeleteDocuments": pb.DeleteDocumentsRequest(collection=collection, ids=["a"]),
        "ListDocuments": pb.ListDocumentsRequest(collection=collection),
        "Search": pb.SearchRequest(collection=collection, query="cells"),
        "SearchBatch": pb.SearchBatchRequest(searches=[pb.SearchRequest(collection=collection, query="cells")]),
        "StartIngest": pb.StartIngestRequest(start=pb.IngestOptions(collection=collection)),
        "GetJob": pb.GetJobRequest(job_id=job_id),
        "ListJobs": pb.ListJobsRequest(collection=collection),
        "CancelJob": pb.CancelJobRequest(job_id=job_id),
        "WatchJob": pb.WatchJobRequest(job_id=job_id),
        "EstimateIngest": pb.EstimateIngestRequest(collection=collection, documents=[doc]),
        "ListDeadLetters": pb.ListDeadLettersRequest(job_id=job_id),
        "RedriveDeadLetters": pb.RedriveDeadLettersRequest(job_id=job_id),
        "CreateApiKey": None,  # an admin names no other tenant's key: checked in the admin test
        "ListApiKeys": None,
        "RevokeApiKey": pb.RevokeApiKeyRequest(key_id=key_id),
    }


def _outcome(names: tuple[str, ...], call: Callable[..., Any], *args: Any) -> tuple[str, str, str]:
    """A call's code, message and details with the probed names blanked out."""
    try:
        answer = call(*args)
    except grpc.RpcError as error:
        message = error.details() or ""
        details = str(error_details(error))
        for name in names:
            message, details = message.replace(name, "<name>"), details.replace(name, "<name>")
        return error.code().name, message, details
    return "OK", type(answer).__name__, str(answer)


def test_a_key_stops_working_when_it_expires_and_says_so_only_to_its_holder(secured: SecuredApis) -> None:
    tenant = tenant_name()
    admin = secured.new_key(tenant, pb.ROLE_ADMIN)
    short_lived = secured.new_key(tenant, pb.ROLE_READ, ttl=timedelta(seconds=3))
    request = pb.ListCollectionsRequest()
    with grpc.insecure_channel(secured.target(0)) as first, grpc.insecure_channel(secured.target(1)) as second:
        listed = pb_grpc.KeyServiceStub(first).ListApiKeys(pb.ListApiKeysRequest(), metadata=bearer(admin), timeout=30)
        described = {key.key_id: key for key in listed.api_keys}[short_lived.split("_")[1]]
        lifetime = described.expire_time.ToDatetime() - described.create_time.ToDatetime()
        assert timedelta(seconds=2) < lifetime <= timedelta(seconds=4)
        assert not {key.key_id: key for key in listed.api_keys}[admin.split("_")[1]].HasField("expire_time")
        for channel in (first, second):  # valid until then, on both replicas (and cached as verified)
            pb_grpc.CollectionServiceStub(channel).ListCollections(request, metadata=bearer(short_lived), timeout=30)
        expires_at = described.expire_time.ToDatetime(tzinfo=UTC).timestamp()

        def refused_on_first() -> bool:
            try:
                pb_grpc.CollectionServiceStub(first).ListCollections(request, metadata=bearer(short_lived), timeout=30)
            except grpc.RpcError:
                return True
            assert time.time() < expires_at + 0.5, "a key past its expiry time was still accepted"
            return False

        waiting.until_sync(refused_on_first, timeout_s=10, what="the key expires")
        for channel in (first, second):  # expiry needs no cache to lapse: a verified row is checked per call
            expired = failure(
                lambda channel=channel: pb_grpc.CollectionServiceStub(channel).ListCollections(
                    request, metadata=bearer(short_lived), timeout=30
                )
            )
            assert expired.code() == grpc.StatusCode.UNAUTHENTICATED
            assert reason_of(expired) == "API_KEY_EXPIRED"
        # Someone who knows the key id but not the secret learns nothing about its expiry.
        forged = short_lived[: -len("x")] + ("A" if short_lived[-1] != "A" else "B")
        wrong = failure(
            lambda: pb_grpc.CollectionServiceStub(first).ListCollections(request, metadata=bearer(forged), timeout=30)
        )
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(wrong) == "INVALID_API_KEY"

        keys = pb_grpc.KeyServiceStub(first)
        read = [pb.ROLE_READ]
        for bad, field in (
            (pb.CreateApiKeyRequest(roles=read, ttl=duration_pb2.Duration(seconds=-5)), "ttl"),
            (pb.CreateApiKeyRequest(roles=read, ttl=duration_pb2.Duration(seconds=11 * 366 * 86_400)), "ttl"),
            (pb.CreateApiKeyRequest(roles=read, expire_time=timestamp_pb2.Timestamp(seconds=1)), "expire_time"),
            (pb.CreateApiKeyRequest(roles=read, expire_time=timestamp_pb2.Timestamp(seconds=2**62)), "expire_time"),
        ):
            refused = failure(lambda bad=bad: keys.CreateApiKey(bad, metadata=bearer(admin), timeout=30))
            assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
            assert field in (refused.details() or "")
        at = timestamp_pb2.Timestamp()
        at.FromDatetime(datetime.now(UTC) + timedelta(days=30))
        made = keys.CreateApiKey(
            pb.CreateApiKeyRequest(roles=[pb.ROLE_READ], expire_time=at), metadata=bearer(admin), timeout=30
        )
        assert made.api_key.expire_time.seconds == at.seconds


def test_another_tenants_data_is_indistinguishable_from_absent_data(secured: SecuredApis) -> None:
    owner, prober = tenant_name(), tenant_name()
    owner_key = secured.new_key(owner)
    owner_admin = secured.new_key(owner, pb.ROLE_ADMIN)
    prober_key = secured.new_key(prober, pb.ROLE_READ, pb.ROLE_WRITE, pb.ROLE_ADMIN)
    with grpc.insecure_channel(secured.target()) as channel:
        collections = pb_grpc.CollectionServiceStub(channel)
        collections.CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="secret_docs")), metadata=bearer(owner_key)
        )
        pb_grpc.DocumentServiceStub(channel).IndexDocuments(
            pb.IndexDocumentsRequest(collection="secret_docs", documents=[pb.Document(id="a", text="cell biology")]),
            metadata=bearer(owner_key),
            timeout=60,
        )
        job_id = _start_job(channel, owner_key, "secret_docs")
        owner_key_id = owner_admin.split("_")[1]
        methods = {m.name: m for m in served_methods(secured.target())}
        probes_of_owned = _probes("secret_docs", job_id, owner_key_id)
        probes_of_absent = _probes("absent_docs", uuid.uuid4().hex, "0123456789abcdef")
        assert set(probes_of_owned) == set(methods), "a served method has no isolation probe"
        for name, request in probes_of_owned.items():
            if request is None:
                continue
            names: tuple[str, ...] = ("secret_docs", "absent_docs", job_id, probes_of_absent["GetJob"].job_id)
            names += (owner_key_id, "0123456789abcdef")
            owned = _outcome(names, invoke, channel, methods[name], request, bearer(prober_key))
            absent = _outcome(names, invoke, channel, methods[name], probes_of_absent[name], bearer(prober_key))
            assert owned == absent, (name, owned, absent)
            assert owned[0] != "OK" or name in ("ListJobs", "SearchBatch", "EstimateIngest"), (name, owned)
        listed = collections.ListCollections(pb.ListCollectionsRequest(), metadata=bearer(prober_key), timeout=30)
        assert "secret_docs" not in [c.name for c in listed.collections]
        jobs = pb_grpc.IngestServiceStub(channel).ListJobs(pb.ListJobsRequest(), metadata=bearer(prober_key))
        assert job_id not in [j.id for j in jobs.jobs]
        # The same name in the prober's namespace is its own collection, empty.
        collections.CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="secret_docs")), metadata=bearer(prober_key)
        )
        hits = pb_grpc.SearchServiceStub(channel).Search(
            pb.SearchRequest(collection="secret_docs", query="cell biology"), metadata=bearer(prober_key)
        )
        assert list(hits.hits) == []
        # ... and the owner's data is untouched by all of the above.
        got = pb_grpc.DocumentServiceStub(channel).GetDocuments(
            pb.GetDocumentsRequest(collection="secret_docs", ids=["a"]), metadata=bearer(owner_key)
        )
        assert [d.text for d in got.documents] == ["cell biology"]
        job = pb_grpc.IngestServiceStub(channel).GetJob(pb.GetJobRequest(job_id=job_id), metadata=bearer(owner_key))
        assert job.job.state == pb.JOB_STATE_RUNNING


# --- rate limits and quotas --------------------------------------------------------------------


def _rate_headers(call: Any) -> dict[str, str]:
    return {k: v for k, v in call.trailing_metadata() or () if k.startswith("x-ratelimit")}


def test_rate_limits_hold_across_replicas_and_say_when_to_retry(secured: SecuredApis) -> None:
    tenant = tenant_name()
    key = secured.new_key(tenant, pb.ROLE_READ, pb.ROLE_WRITE, read_per_s=2)  # a bucket of 4 reads
    allowed, refused = 0, []
    with grpc.insecure_channel(secured.target(0)) as first, grpc.insecure_channel(secured.target(1)) as second:
        stubs = [pb_grpc.CollectionServiceStub(first), pb_grpc.CollectionServiceStub(second)]
        _, call = stubs[0].ListCollections.with_call(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=30)
        headers = _rate_headers(call)
        assert headers["x-ratelimit-limit"] == "2" and headers["x-ratelimit-class"] == "read"
        assert int(headers["x-ratelimit-remaining"]) == 3
        started = time.monotonic()
        for i in range(20):
            try:
                stubs[i % 2].ListCollections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=30)
                allowed += 1
            except grpc.RpcError as error:
                refused.append(error)
        elapsed = time.monotonic() - started
        # One shared bucket: 3 left, plus what refills meanwhile; two buckets would allow 7 or more.
        assert allowed <= 3 + int(2 * elapsed) + 1, (allowed, elapsed)
        assert refused
        first_refusal = refused[0]
        assert first_refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error_details(first_refusal)
        assert details["ErrorInfo"].reason == "RATE_LIMITED"
        assert 0 < details["RetryInfo"].retry_delay.ToMilliseconds() <= 501
        assert details["QuotaFailure"].violations[0].subject.endswith(":read")
        assert set(_rate_headers(first_refusal)) >= {"x-ratelimit-remaining", "x-ratelimit-limit"}
        # Writes have their own bucket: reads used up do not stop them.
        stubs[0].CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="writes_ok")), metadata=bearer(key), timeout=30
        )


@pytest.mark.parametrize(("field", "rate"), [("read_per_s", 1e9), ("read_per_s", 1e-20), ("write_per_s", 1e9)])
def test_a_key_cannot_be_made_faster_than_its_tenants_ceiling_or_slower_than_the_floor(
    secured: SecuredApis, field: str, rate: float
) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        if field == "read_per_s":
            secured.new_key(tenant_name(), pb.ROLE_READ, read_per_s=rate)
        else:
            secured.new_key(tenant_name(), pb.ROLE_READ, write_per_s=rate)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_details(refused.value)["BadRequest"].field_violations[0].field == field
    assert "out of range" in (refused.value.details() or "")


def test_a_search_batch_counts_one_read_per_search(secured: SecuredApis) -> None:
    """Batching must not multiply a key's search rate: 1.5 reads/s, a bucket of 3 (2 s)."""
    key = secured.new_key(tenant_name(), pb.ROLE_READ, read_per_s=1.5)
    with grpc.insecure_channel(secured.target()) as channel:
        search = pb_grpc.SearchServiceStub(channel)

        def search_batch(size: int) -> tuple[grpc.StatusCode, Any]:
            """Outcome of a batch of `size` searches (of a collection that does not exist: what
            matters is whether the gate let it through) and the call or error, for its trailers."""
            request = pb.SearchBatchRequest(searches=[pb.SearchRequest(collection="absent", query="q")] * size)
            try:
                _, call = search.SearchBatch.with_call(request, metadata=bearer(key), timeout=30)
                return grpc.StatusCode.OK, call
            except grpc.RpcError as error:
                return error.code(), error

        code, admitted = search_batch(3)
        assert code != grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _rate_headers(admitted)["x-ratelimit-remaining"] == "0"  # the gate took 3 reads
        # Counted per call, 2 reads would be left; counted per search, none are, for 2 s.
        code, refused = search_batch(3)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "counts as 3" in (refused.details() or "")
        # A batch larger than the whole bucket is not refused for good: it waits for a full one.
        time.sleep(error_details(refused)["RetryInfo"].retry_delay.ToMilliseconds() / 1000 + 0.5)
        code, _ = search_batch(20)
        assert code != grpc.StatusCode.RESOURCE_EXHAUSTED


def test_tenant_quotas_on_documents_and_daily_ingest(secured: SecuredApis) -> None:
    tenant = tenant_name()
    key = secured.new_key(tenant)
    with grpc.insecure_channel(secured.target()) as channel:
        pb_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="quota")), metadata=bearer(key), timeout=30
        )
        documents = pb_grpc.DocumentServiceStub(channel)

        def index(count: int, offset: int, size: int = 20) -> Any:
            docs = [pb.Document(id=f"d{offset + i}", text=f"document {offset + i} {'w' * size}") for i in range(count)]
            return documents.IndexDocuments(
                pb.IndexDocumentsRequest(collection="quota", documents=docs), metadata=bearer(key), timeout=60
            )

        index(MAX_DOCUMENTS - 5, 0)
        over = failure(lambda: index(10, 1000))
        assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error_details(over)
        assert details["ErrorInfo"].reason == "DOCUMENT_QUOTA_EXCEEDED"
        assert details["QuotaFailure"].violations[0].subject == f"tenant:{tenant}:documents"
        index(5, 2000)  # what still fits is accepted

    volume_tenant = tenant_name()
    volume_key = secured.new_key(volume_tenant)
    with grpc.insecure_channel(secured.target(1)) as channel:
        pb_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="volume")), metadata=bearer(volume_key)
        )
        stub = pb_grpc.DocumentServiceStub(channel)
        big = "v" * (MAX_INGEST_BYTES // 3)
        for i in range(2):
            stub.IndexDocuments(
                pb.IndexDocumentsRequest(collection="volume", documents=[pb.Document(id=f"v{i}", text=big)]),
                metadata=bearer(volume_key),
                timeout=60,
            )
        over = failure(
            lambda: stub.IndexDocuments(
                pb.IndexDocumentsRequest(collection="volume", documents=[pb.Document(id="v9", text=big + big)]),
                metadata=bearer(volume_key),
                timeout=60,
            )
        )
        assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_details(over)["ErrorInfo"].reason == "INGEST_QUOTA_EXCEEDED"
        assert error_details(over)["RetryInfo"].retry_delay.seconds > 0


def test_a_tenant_named_in_the_configuration_has_its_own_document_quota(secured: SecuredApis) -> None:
    """MESHSEARCH_API_TENANT_QUOTAS raises one tenant's document quota; the others keep the default."""
    key = secured.new_key(LARGE_TENANT)
    with grpc.insecure_channel(secured.target()) as channel:
        pb_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="large")), metadata=bearer(key), timeout=30
        )
        documents = pb_grpc.DocumentServiceStub(channel)

        def index(count: int, offset: int) -> Any:
            docs = [pb.Document(id=f"d{offset + i}", text=f"document {offset + i}") for i in range(count)]
            return documents.IndexDocuments(
                pb.IndexDocumentsRequest(collection="large", documents=docs), metadata=bearer(key), timeout=60
            )

        index(MAX_DOCUMENTS + 10, 0)  # past the default quota: accepted for this tenant
        over = failure(lambda: index(LARGE_TENANT_MAX_DOCUMENTS, 1000))
        assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_details(over)["ErrorInfo"].reason == "DOCUMENT_QUOTA_EXCEEDED"
        assert f"quota of {LARGE_TENANT_MAX_DOCUMENTS}" in (over.details() or "")


def test_the_interactive_priority_is_a_right_a_tenant_is_given_not_one_a_key_takes(secured: SecuredApis) -> None:
    """The queue serves interactive jobs before every other tenant's: only a tenant given the
    right in TENANT_QUOTAS may ask for it; any tenant may run normal and bulk jobs."""
    ordinary, given = secured.new_key(tenant_name()), secured.new_key(LARGE_TENANT)
    with grpc.insecure_channel(secured.target()) as channel:
        for key in (ordinary, given):
            try:
                pb_grpc.CollectionServiceStub(channel).CreateCollection(
                    pb.CreateCollectionRequest(collection=pb.Collection(name="urgent")),
                    metadata=bearer(key),
                    timeout=30,
                )
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        refused = failure(lambda: _start_job(channel, ordinary, "urgent", pb.JOB_PRIORITY_INTERACTIVE))
        assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_details(refused)["ErrorInfo"].reason == "PRIORITY_NOT_GRANTED"
        assert _start_job(channel, ordinary, "urgent", pb.JOB_PRIORITY_NORMAL)
        assert _start_job(channel, given, "urgent", pb.JOB_PRIORITY_INTERACTIVE)


def test_a_tenant_runs_a_bounded_number_of_jobs_at_once(secured: SecuredApis) -> None:
    """TENANT_MAX_RUNNING_JOBS (here 2, from TENANT_QUOTAS): one tenant's open uploads cannot
    fill the queue; the count holds across replicas, and a cancelled job frees its place."""
    key = secured.new_key(FEW_JOBS_TENANT)
    with grpc.insecure_channel(secured.target()) as channel, grpc.insecure_channel(secured.target(1)) as other:
        try:
            pb_grpc.CollectionServiceStub(channel).CreateCollection(
                pb.CreateCollectionRequest(collection=pb.Collection(name="jobs")), metadata=bearer(key), timeout=30
            )
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        running = [_start_job(channel, key, "jobs"), _start_job(other, key, "jobs")]  # uploads left open
        refused = failure(lambda: _start_job(channel, key, "jobs"))
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = error_details(refused)
        assert details["ErrorInfo"].reason == "TOO_MANY_JOBS"
        assert details["QuotaFailure"].violations[0].subject == f"tenant:{FEW_JOBS_TENANT}:running_jobs"
        ingest = pb_grpc.IngestServiceStub(channel)
        for job_id in running:
            ingest.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=bearer(key), timeout=30)
        assert _start_job(other, key, "jobs")


def test_a_tenant_holds_a_bounded_number_of_collections(secured: SecuredApis) -> None:
    """TENANT_MAX_COLLECTIONS (here 2, from TENANT_QUOTAS), counting this tenant's alone."""
    key = secured.new_key(FEW_JOBS_TENANT)
    collections = lambda channel: pb_grpc.CollectionServiceStub(channel)  # noqa: E731
    with grpc.insecure_channel(secured.target()) as channel:
        for name in ("jobs", "second"):  # "jobs" may exist already (the test above)
            try:
                collections(channel).CreateCollection(
                    pb.CreateCollectionRequest(collection=pb.Collection(name=name)), metadata=bearer(key), timeout=30
                )
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.ALREADY_EXISTS
        refused = failure(
            lambda: collections(channel).CreateCollection(
                pb.CreateCollectionRequest(collection=pb.Collection(name="third")), metadata=bearer(key), timeout=30
            )
        )
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_details(refused)["ErrorInfo"].reason == "TOO_MANY_COLLECTIONS"
        collections(channel).DeleteCollection(
            pb.DeleteCollectionRequest(name="second"), metadata=bearer(key), timeout=30
        )
        created = collections(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="third")), metadata=bearer(key), timeout=30
        )
        assert created.collection.name == "third"


def _fallback_count(metrics_port: int) -> float:
    return sample(metrics_port, "meshsearch_api_rate_limit_fallback_total")


def test_pressure_on_the_embedding_cache_does_not_evict_a_keys_spent_budget(secured: SecuredApis) -> None:
    """The cache Redis evicts under memory pressure (allkeys-lru); rate-limit buckets live in the
    state Redis (noeviction), so filling the cache past its memory leaves a spent bucket spent.
    Were the buckets in the cache Redis, the flood (newer keys) would evict them first and the
    key would be served again at once."""
    import redis

    tenant = tenant_name()
    key = secured.new_key(tenant, pb.ROLE_READ, read_per_s=0.01)  # a bucket of 1: refills in 100 s
    owner = secured.replicas[0]
    cache = redis.Redis.from_url(owner.redis_url, socket_timeout=10)
    state = redis.Redis.from_url(owner.state_redis_url, socket_timeout=10)
    assert state.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"

    def list_collections() -> str:
        try:
            stub.ListCollections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=30)
            return "OK"
        except grpc.RpcError as error:
            return error.code().name

    with grpc.insecure_channel(secured.target(0)) as channel:
        stub = pb_grpc.CollectionServiceStub(channel)
        outcomes = [list_collections() for _ in range(3)]
        assert outcomes[0] == "OK" and "RESOURCE_EXHAUSTED" in outcomes, outcomes
        buckets = state.keys("meshsearch:rate:*")
        assert buckets, "the key's bucket is in the state Redis"
        old_limit = int(cache.config_get("maxmemory")["maxmemory"] or 0)
        cache.config_set("maxmemory", "8mb")
        try:
            blob = b"x" * (1 << 20)
            for i in range(32):  # four times the cache's memory
                cache.set(f"meshsearch:pressure:{i}", blob)
            assert cache.info("stats")["evicted_keys"] > 0, "the cache Redis evicted under pressure"
        finally:
            cache.delete(*(f"meshsearch:pressure:{i}" for i in range(32)))
            cache.config_set("maxmemory", old_limit)
        assert all(state.exists(bucket) for bucket in buckets)
        assert list_collections() == "RESOURCE_EXHAUSTED"


def test_with_redis_down_each_replica_still_limits_on_its_own(secured: SecuredApis) -> None:
    """Run last in this module: it stops the replicas' state Redis (and starts it again)."""
    tenant = tenant_name()
    key = secured.new_key(tenant, pb.ROLE_READ, read_per_s=1)  # a bucket of 2
    owner = secured.replicas[0]
    before = _fallback_count(owner.ports.api_metrics)
    owner.kill("redis-state")
    try:
        outcomes = []
        with grpc.insecure_channel(secured.target(0)) as channel:
            stub = pb_grpc.CollectionServiceStub(channel)
            for _ in range(8):
                try:
                    stub.ListCollections(pb.ListCollectionsRequest(), metadata=bearer(key), timeout=30)
                    outcomes.append("OK")
                except grpc.RpcError as error:
                    outcomes.append(error.code().name)
        assert "RESOURCE_EXHAUSTED" in outcomes, outcomes  # limited, not a free-for-all
        assert outcomes.count("OK") <= 4, outcomes
        assert set(outcomes) <= {"OK", "RESOURCE_EXHAUSTED"}, outcomes
        assert _fallback_count(owner.ports.api_metrics) > before
    finally:
        owner.restart("redis-state")


def test_a_tenants_ingest_job_is_run_by_the_worker_into_that_tenants_collection(secured: SecuredApis) -> None:
    tenant = tenant_name()
    key = secured.new_key(tenant)
    texts = {f"doc{i}": f"tenant document number {i} about proteins" for i in range(5)}
    with grpc.insecure_channel(secured.target()) as channel:
        pb_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name="ingested")), metadata=bearer(key), timeout=30
        )
        requests = [
            pb.StartIngestRequest(start=pb.IngestOptions(collection="ingested")),
            pb.StartIngestRequest(
                batch=pb.IngestBatch(first_sequence=0, documents=[pb.Document(id=i, text=t) for i, t in texts.items()])
            ),
            pb.StartIngestRequest(complete=pb.UploadComplete(total_documents=len(texts))),
        ]
        answers = list(pb_grpc.IngestServiceStub(channel).StartIngest(iter(requests), metadata=bearer(key), timeout=60))
        job_id = answers[0].job_id
        ingest = pb_grpc.IngestServiceStub(channel)

        def completed() -> bool:
            job = ingest.GetJob(pb.GetJobRequest(job_id=job_id), metadata=bearer(key)).job
            assert job.state in (pb.JOB_STATE_RUNNING, pb.JOB_STATE_COMPLETED), job
            return job.state == pb.JOB_STATE_COMPLETED

        waiting.until_sync(completed, timeout_s=120, what="the job completes")
        got = pb_grpc.DocumentServiceStub(channel).GetDocuments(
            pb.GetDocumentsRequest(collection="ingested", ids=list(texts)), metadata=bearer(key)
        )
        assert {d.id: d.text for d in got.documents} == texts


def test_a_node_client_authenticates_and_reads_rate_limit_details(secured: SecuredApis) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required (make test installs it)"
    key = secured.new_key(tenant_name(), pb.ROLE_READ, read_per_s=1)
    run = subprocess.run(
        [node, str(Path(__file__).parents[2] / "clients" / "node" / "test" / "auth.mjs"), secured.target(1), key],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout)
    refused = {d["type"]: d["value"] for d in seen["without_key"]["details"]}
    assert seen["without_key"]["code"] == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert refused["google.rpc.ErrorInfo"]["reason"] == "MISSING_CREDENTIALS"
    assert seen["with_key"]["ok"] and seen["with_key"]["trailers"]["x-ratelimit-limit"] == "1"
    assert int(seen["with_key"]["trailers"]["x-ratelimit-remaining"]) >= 0
    limited = seen["limited"]
    assert limited["code"] == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    details = {d["type"]: d["value"] for d in limited["details"]}
    assert details["google.rpc.ErrorInfo"]["reason"] == "RATE_LIMITED"
    assert details["google.rpc.QuotaFailure"]["violations"][0]["subject"].endswith(":read")
    delay = details["google.rpc.RetryInfo"]["retry_delay"]
    assert 0 < int(delay["seconds"]) * 1000 + int(delay["nanos"]) / 1e6 <= 1000
    assert limited["trailers"]["x-ratelimit-remaining"] == "0"
    # With retries on, a burst past the bucket (1 read per second, now empty) completes, paced by RetryInfo.
    assert seen["paced"]["completed"] == 4 and seen["paced"]["elapsed_ms"] >= 2000
    assert seen["plaintext"] == {"remote": True, "lookalike": True, "remote_allowed": False, "loopback": False}


def _meshsearch(
    secured: SecuredApis, key: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHSEARCH_TARGET": secured.target(), "MESHSEARCH_API_KEY": key, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "meshsearch_cli", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip


def test_the_cli_manages_keys_and_a_revoked_key_exits_77(secured: SecuredApis) -> None:
    tenant = tenant_name()
    made = _meshsearch(secured, secured.bootstrap_key, "keys", "create", "--tenant", tenant, "--role", "admin")
    assert made.returncode == 0, made.stderr
    admin = made.stdout.strip()
    assert admin.startswith("msk_") and "shown once" in made.stderr
    reader = _meshsearch(
        secured, admin, "keys", "create", "--role", "read", "--name", "dashboards", "--expires-in", "30d"
    )
    assert reader.returncode == 0, reader.stderr
    in_30_days = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%d")
    assert f"expires {in_30_days}" in reader.stderr
    reader_key = reader.stdout.strip()
    listed = _meshsearch(secured, admin, "keys", "list")
    assert listed.returncode == 0 and "dashboards" in listed.stdout and tenant in listed.stdout
    assert in_30_days in listed.stdout and "never" in listed.stdout  # the reader expires, the admin key not
    assert reader_key not in listed.stdout and admin not in listed.stdout
    assert _meshsearch(secured, reader_key, "collections", "list").returncode == 0
    writer = _meshsearch(secured, admin, "keys", "create", "--role", "read", "--role", "write").stdout.strip()
    lines = "".join(json.dumps({"id": f"d{i}", "text": f"streamed document {i}"}) + "\n" for i in range(3))
    streamed = _meshsearch(secured, writer, "ingest", "-", "-c", "streamed", "--create", stdin=lines)
    assert streamed.returncode == 0, streamed.stderr  # the key rides on streaming calls too
    revoked = _meshsearch(secured, admin, "keys", "revoke", reader_key.split("_")[1])
    assert revoked.returncode == 0, revoked.stderr
    refused = _meshsearch(secured, reader_key, "collections", "list")
    assert refused.returncode == 77 and "UNAUTHENTICATED" in refused.stderr
    bad_role = _meshsearch(secured, admin, "keys", "create", "--role", "root")
    assert bad_role.returncode == 2 and "unknown role" in bad_role.stderr
    bad_lifetime = _meshsearch(secured, admin, "keys", "create", "--expires-in", "soon")
    assert bad_lifetime.returncode == 2 and "not a duration" in bad_lifetime.stderr


def test_with_auth_on_the_api_reports_serving_only_once_its_key_store_is_open(
    stack: EmbeddedStack, tmp_path: Path
) -> None:
    """Before its jobs database (where keys live) answers, an api with auth on can authenticate
    no call: a load balancer must not send it any."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    assert stack.databases is not None
    jobs = conninfo_to_dict(stack.databases.jobs_url)  # PostgreSQL on a Unix socket in `host`
    socket = Path(str(jobs["host"])) / f".s.PGSQL.{jobs.get('port') or 5432}"
    assert socket.is_socket()
    late = tmp_path / "late"  # where the api looks for the database: empty until it "comes up"
    late.mkdir()
    bootstrap_key = secrets.token_hex(24)
    api = EmbeddedStack(
        tmp_path,
        Ports.ephemeral(),
        database_url=stack.database_url,
        databases=replace(stack.databases, jobs_url=make_conninfo(stack.databases.jobs_url, host=str(late))),
        extra_env={"MESHSEARCH_API_AUTH_ENABLED": "true", "MESHSEARCH_API_BOOTSTRAP_KEY": bootstrap_key},
        caller_token=stack.caller_token,
    )
    api.ports = replace(api.ports, embedder=stack.ports.embedder, search=stack.ports.search)
    try:
        api.start_stores(services=("api",))
        api.start_service("api")
        waiting.until_sync(
            lambda: "jobs database not reachable yet" in api.log_path("api").read_text(),
            what="the api tried its jobs database and failed",
        )
        with grpc.insecure_channel(f"127.0.0.1:{api.ports.api}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)  # type: ignore[attr-defined]
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
            (late / socket.name).symlink_to(socket)  # the database is there now
            api.wait_service("api", timeout_s=60)
            made = pb_grpc.KeyServiceStub(channel).CreateApiKey(
                pb.CreateApiKeyRequest(tenant="late", roles=[pb.ROLE_READ]),
                metadata=bearer(bootstrap_key),
                timeout=TIMEOUT_S,
            )
            assert made.secret
    finally:
        api.stop()
