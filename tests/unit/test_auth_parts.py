"""The parts of authentication, isolation and rate limiting, each alone (a fake key store
stands in for PostgreSQL; the e2e tests run them together against real servers)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
import redis.asyncio as redis
from google.rpc import error_details_pb2
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from meshsearch.api.v1 import api_pb2
from meshsearch_api.auth import keys, permissions, principal
from meshsearch_api.auth.admin import MAX_LIFETIME, expiry
from meshsearch_api.auth.authenticator import Authenticator
from meshsearch_api.auth.gate import Gate, RateLimited
from meshsearch_api.auth.key_rates import KeyRateBounds
from meshsearch_api.auth.key_store import StoredKey
from meshsearch_api.auth.permissions import METHOD_ROLES
from meshsearch_api.auth.principal import Role
from meshsearch_api.auth.quotas import TenantQuotas
from meshsearch_api.auth.rate_limits import FALLBACKS, RateLimiter
from meshsearch_api.settings import ApiSettings, TenantQuota
from meshsearch_common.errors import InvalidArgument, MeshError, ResourceExhausted, status_details
from meshsearch_common.readiness import Readiness
from tests.clock import FakeClock


def test_every_rpc_of_the_compiled_contract_has_an_access_rule() -> None:
    contract = {
        f"/{service.full_name}/{method.name}"
        for service in api_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert contract == set(METHOD_ROLES)


async def test_a_method_without_a_rule_is_refused_to_everyone() -> None:
    gate = Gate(None, RateLimiter(None, 1, 1), 10, 10)
    with pytest.raises(MeshError) as refused:
        await gate.admit("/meshsearch.api.v1.CollectionService/DropEverything", None)
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_tenants_get_their_own_namespace_and_the_default_tenant_keeps_bare_names() -> None:
    assert principal.stored_collection("docs") == "docs"
    assert principal.public_collection("docs") == "docs"
    assert principal.public_collection("acme/docs") is None
    with principal.acting_as("acme"):
        assert principal.stored_collection("docs") == "acme/docs"
        assert principal.public_collection("acme/docs") == "docs"
        assert principal.public_collection("docs") is None
        assert principal.public_collection("other/docs") is None
    for bad in ("acme/docs", "Docs", "", "a" * 64, "../x"):
        with pytest.raises(InvalidArgument):
            principal.stored_collection(bad)


def test_keys_have_a_public_id_and_a_slow_hash() -> None:
    key_id, key = keys.new_key()
    assert keys.key_id_of(key) == key_id
    assert keys.key_id_of(key + "x") is None and keys.key_id_of("msk_" + key_id) is None
    digest = keys.hash_key(key)
    assert digest.startswith("$argon2id$") and key not in digest
    assert keys.verify_key(digest, key) and not keys.verify_key(digest, key[:-1] + "x")
    assert not keys.verify_key("not a hash", key)


class FakeKeyStore:
    """Stands in for the PostgreSQL key store; counts lookups."""

    def __init__(self) -> None:
        self.keys: dict[str, StoredKey] = {}
        self.lookups = 0

    def add(self, tenant: str, *roles: Role, expire_time: datetime | None = None) -> str:
        key_id, key = keys.new_key()
        self.keys[key_id] = StoredKey(key_id, tenant, frozenset(roles), "", keys.hash_key(key), expire_time=expire_time)
        return key

    async def find(self, key_id: str) -> StoredKey | None:
        self.lookups += 1
        await asyncio.sleep(0.01)
        return self.keys.get(key_id)


def authenticator(
    store: FakeKeyStore, ttl_s: float = 60, bootstrap: str = "", clock: FakeClock | None = None
) -> Authenticator:
    ready: Readiness[object] = Readiness("keys")
    ready.set(store)
    clock = clock or FakeClock()
    return Authenticator(ready, ttl_s, bootstrap, clock=clock, wall_clock=clock.wall)  # type: ignore[arg-type]


async def test_concurrent_first_calls_with_one_key_share_one_verification() -> None:
    store = FakeKeyStore()
    key = store.add("acme", Role.READ)
    auth = authenticator(store)
    found = await asyncio.gather(*(auth.authenticate(f"Bearer {key}") for _ in range(20)))
    assert {p.tenant for p in found} == {"acme"} and store.lookups == 1
    await auth.authenticate(f"bearer {key}")
    assert store.lookups == 1  # cached


def counted_verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys each argon2 verification is run for, from now on."""
    verified: list[str] = []
    real_verify = keys.verify_key

    def counted(key_hash: str, key: str) -> bool:
        verified.append(key)
        return real_verify(key_hash, key)

    monkeypatch.setattr(keys, "verify_key", counted)
    return verified


async def test_a_busy_key_pays_the_slow_hash_once_while_its_row_is_rechecked_every_ttl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = FakeKeyStore()
    key = store.add("acme", Role.READ)
    verifications = counted_verifications(monkeypatch)
    clock = FakeClock()
    auth = authenticator(store, ttl_s=0.05, clock=clock)
    for _ in range(4):
        await auth.authenticate(f"Bearer {key}")
        clock.advance(0.06)
    assert store.lookups == 4 and len(verifications) == 1
    wrong = key[:-1] + ("B" if key[-1] != "B" else "C")
    for _ in range(3):
        with pytest.raises(MeshError):
            await auth.authenticate(f"Bearer {wrong}")
    assert len(verifications) == 2  # a wrong secret is hashed once, then refused from the cache


async def test_an_absent_key_id_costs_the_same_hashing_as_a_live_one_with_a_wrong_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Timing must not tell which key ids exist: both refusals run one argon2 verification,
    then come from the refusal cache, and both count toward the key id's lockout."""
    store = FakeKeyStore()
    live = store.add("acme", Role.READ)
    _, absent = keys.new_key()
    wrong = live[:-1] + ("B" if live[-1] != "B" else "C")
    verified = counted_verifications(monkeypatch)
    auth = authenticator(store)
    for presented in (wrong, absent):
        for _ in range(3):
            with pytest.raises(MeshError) as refused:
                await auth.authenticate(f"Bearer {presented}")
            assert refused.value.reason == "INVALID_API_KEY"
        assert verified.count(presented) == 1, presented


async def test_revocation_is_seen_once_the_cache_entry_expires() -> None:
    store = FakeKeyStore()
    key = store.add("acme", Role.READ)
    clock = FakeClock()
    auth = authenticator(store, ttl_s=1.0, clock=clock)
    await auth.authenticate(f"Bearer {key}")
    await auth.authenticate(f"Bearer {key}")  # row cached now, after the slow first verification
    key_id = keys.key_id_of(key)
    assert key_id is not None
    old = store.keys[key_id]
    store.keys[key_id] = StoredKey(
        old.key_id, old.tenant, old.roles, "", old.secret_hash, revoke_time=datetime.now(UTC)
    )
    await auth.authenticate(f"Bearer {key}")  # still cached
    clock.advance(1.05)
    with pytest.raises(MeshError) as refused:
        await auth.authenticate(f"Bearer {key}")
    assert refused.value.reason == "INVALID_API_KEY"


async def test_an_expired_key_is_refused_even_while_its_row_and_secret_are_cached() -> None:
    store = FakeKeyStore()
    clock = FakeClock()
    expires = clock.wall() + timedelta(seconds=3)
    key = store.add("acme", Role.READ, expire_time=expires)
    auth = authenticator(store, ttl_s=60, clock=clock)
    assert (await auth.authenticate(f"Bearer {key}")).tenant == "acme"
    clock.advance(3.05)
    with pytest.raises(MeshError) as refused:
        await auth.authenticate(f"Bearer {key}")
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED and refused.value.reason == "API_KEY_EXPIRED"
    assert store.lookups == 1  # the row was cached: expiry is checked on every call, not on a reload
    wrong = key[:-1] + ("B" if key[-1] != "B" else "C")
    with pytest.raises(MeshError) as guessed:
        await auth.authenticate(f"Bearer {wrong}")
    assert guessed.value.reason == "INVALID_API_KEY"  # only the secret's holder learns it expired


def test_a_new_keys_expiry_comes_from_a_time_or_a_ttl_within_ten_years() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert expiry(None, None, now) is None
    assert expiry(None, timedelta(days=90), now) == now + timedelta(days=90)
    assert expiry(now + timedelta(hours=1), None, now) == now + timedelta(hours=1)
    for when, ttl, field in (
        (now, None, "expire_time"),
        (now - timedelta(seconds=1), None, "expire_time"),
        (now + MAX_LIFETIME + timedelta(seconds=1), None, "expire_time"),
        (None, timedelta(0), "ttl"),
        (None, timedelta(seconds=-1), "ttl"),
        (None, MAX_LIFETIME + timedelta(seconds=1), "ttl"),
    ):
        with pytest.raises(InvalidArgument) as refused:
            expiry(when, ttl, now)
        assert refused.value.field == field


def test_tenant_quotas_from_the_environment_replace_the_defaults_field_by_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESHSEARCH_API_TENANT_MAX_DOCUMENTS", "100")
    monkeypatch.setenv("MESHSEARCH_API_TENANT_MAX_INGEST_BYTES_PER_DAY", "5000")
    monkeypatch.setenv(
        "MESHSEARCH_API_TENANT_QUOTAS",
        '{"big": {"max_documents": 1000000}, "unbounded": {"max_documents": 0, "max_ingest_bytes_per_day": 0}}',
    )
    settings = ApiSettings()
    assert settings.tenant_quotas["big"] == TenantQuota(max_documents=1_000_000)
    quotas = TenantQuotas(
        None,
        None,  # type: ignore[arg-type]  # limits() reads no counts
        settings.tenant_max_documents,
        settings.tenant_max_ingest_bytes_per_day,
        settings.tenant_quotas,
        settings.tenant_count_cache_s,
    )
    assert quotas.limits("big") == (1_000_000, 5000)
    assert quotas.limits("unbounded") == (0, 0)
    assert quotas.limits("anyone-else") == (100, 5000)
    for wrong in ('{"Not A Tenant": {}}', '{"ok": {"max_documents": -1}}', '{"ok": {"max_docs": 5}}'):
        monkeypatch.setenv("MESHSEARCH_API_TENANT_QUOTAS", wrong)
        with pytest.raises(ValueError):
            ApiSettings()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "MISSING_CREDENTIALS"),
        ("", "MISSING_CREDENTIALS"),
        ("Basic abc", "MALFORMED_CREDENTIALS"),
        ("Bearer", "MALFORMED_CREDENTIALS"),
        ("Bearer " + "x" * 1000, "MALFORMED_CREDENTIALS"),
        ("Bearer msk_0123456789abcdef_" + "A" * 43, "INVALID_API_KEY"),
        ("Bearer something-else", "INVALID_API_KEY"),
        ("Bearer \udcff\udcfe", "INVALID_API_KEY"),
    ],
)
async def test_bad_credentials_are_unauthenticated_with_a_reason(value: str | None, reason: str) -> None:
    with pytest.raises(MeshError) as refused:
        await authenticator(FakeKeyStore()).authenticate(value)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED and refused.value.reason == reason


async def test_the_bootstrap_key_is_a_system_principal_that_reaches_no_data() -> None:
    bootstrap = "b" * 40
    gate = Gate(authenticator(FakeKeyStore(), bootstrap=bootstrap), RateLimiter(None, 1, 1), 10, 10)
    admitted = await gate.admit("/meshsearch.api.v1.KeyService/ListApiKeys", f"Bearer {bootstrap}")
    assert admitted.system
    with pytest.raises(MeshError) as refused:
        await gate.admit("/meshsearch.api.v1.SearchService/Search", f"Bearer {bootstrap}")
    assert refused.value.reason == "BOOTSTRAP_KEY_MANAGES_KEYS_ONLY"


async def test_a_key_gets_its_burst_then_waits_and_refills() -> None:
    clock = FakeClock()
    limiter = RateLimiter(None, burst_s=1.0, fallback_s=1.0, clock=clock)
    decisions = [await limiter.take("k", "read", rate=5) for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert decisions[-1].retry_after_s == pytest.approx(0.2)  # one call's worth at 5 a second
    assert (await limiter.take("k", "write", rate=5)).allowed  # writes have their own bucket
    clock.advance(0.19)
    assert not (await limiter.take("k", "read", rate=5)).allowed
    clock.advance(0.02)
    assert (await limiter.take("k", "read", rate=5)).allowed


async def test_a_call_costs_its_bundled_reads_capped_at_the_bucket() -> None:
    search_batch = "/meshsearch.api.v1.SearchService/SearchBatch"
    request = api_pb2.SearchBatchRequest(searches=[api_pb2.SearchRequest(query="q")] * 6)
    assert permissions.cost(search_batch, request) == 6
    assert permissions.cost(search_batch, api_pb2.SearchBatchRequest()) == 1
    assert permissions.cost("/meshsearch.api.v1.SearchService/Search", api_pb2.SearchRequest()) == 1
    limiter = RateLimiter(None, burst_s=1.0, fallback_s=1.0)
    first = await limiter.take("k", "read", rate=10, cost=6)
    assert first.allowed and first.remaining == 4
    second = await limiter.take("k", "read", rate=10, cost=6)
    assert not second.allowed and 0.1 < second.retry_after_s <= 0.2
    whole = await limiter.take("other", "read", rate=10, cost=50)  # larger than the bucket: takes it all
    assert whole.allowed and whole.remaining == 0


async def test_a_failing_redis_falls_back_to_a_local_limit_not_to_none() -> None:
    client = redis.Redis(
        host="127.0.0.1", port=1, socket_timeout=0.2, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 1)
    )
    limiter = RateLimiter(client, burst_s=1.0, fallback_s=30)
    before = FALLBACKS._value.get()
    started = time.monotonic()
    decisions = [await limiter.take("k", "read", rate=3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True] * 3 + [False] * 2
    assert FALLBACKS._value.get() - before == 5
    assert time.monotonic() - started < 1.0  # Redis is not retried on every call while it is down
    await client.aclose()


def test_a_rate_limit_refusal_carries_retry_info_and_quota_failure() -> None:
    error = ResourceExhausted("slow down", 0.25, reason="RATE_LIMITED", quota_subject="key:abc:read")
    status = status_details(error)
    kinds = {detail.type_url.rsplit(".", 1)[-1] for detail in status.details}
    assert kinds == {"RetryInfo", "QuotaFailure", "ErrorInfo"}
    quota = error_details_pb2.QuotaFailure()
    next(d for d in status.details if d.type_url.endswith("QuotaFailure")).Unpack(quota)
    assert quota.violations[0].subject == "key:abc:read"
    assert isinstance(RateLimited, type) and issubclass(RateLimited, ResourceExhausted)


class FakeCounts:
    """Stands in for the search service's collection counts."""

    def __init__(self, stored: int) -> None:
        self.stored = stored

    async def list_collections(self) -> list[Any]:
        return [SimpleNamespace(document_count=self.stored)]


async def test_a_tenants_stored_count_is_reused_for_its_cache_time_then_read_again() -> None:
    clock, counts = FakeClock(), FakeCounts(stored=90)
    quotas = TenantQuotas(None, counts, 100, 0, None, count_cache_s=2.0, clock=clock, wall_clock=clock.wall)  # type: ignore[arg-type]
    await quotas.charge(5, 0)  # 90 stored + 5
    counts.stored = 10  # the tenant deleted documents meanwhile
    with pytest.raises(MeshError) as refused:
        await quotas.charge(10, 0)  # 95 cached + 10 > 100
    assert refused.value.reason == "DOCUMENT_QUOTA_EXCEEDED"
    clock.advance(2.01)
    await quotas.charge(10, 0)  # the count is read again: 10 + 10


async def test_the_daily_ingest_quota_starts_again_at_midnight_utc() -> None:
    clock = FakeClock(start=datetime(2026, 12, 4, 23, 59, 0, tzinfo=UTC).timestamp())
    quotas = TenantQuotas(None, FakeCounts(0), 0, 1000, None, clock=clock, wall_clock=clock.wall)  # type: ignore[arg-type]
    await quotas.charge(1, 800)
    with pytest.raises(MeshError) as refused:
        await quotas.charge(1, 300)
    assert refused.value.reason == "INGEST_QUOTA_EXCEEDED"
    assert refused.value.retry_after_s == pytest.approx(60)  # type: ignore[attr-defined]
    clock.advance(61)
    await quotas.charge(1, 300)  # a new UTC day


def test_key_rates_lie_between_the_floor_and_the_tenants_ceiling() -> None:
    bounds = KeyRateBounds(0.01, 1000, 200, {"bulk": (5000.0, None)})
    assert bounds.check("acme", "read", 0, "read_per_s") == 0  # the server's default
    assert bounds.check("acme", "read", 1000, "read_per_s") == 1000
    assert bounds.check("bulk", "read", 5000, "read_per_s") == 5000  # a named tenant's own ceiling
    assert bounds.ceiling("bulk", "write") == 200  # a ceiling left out keeps the default
    for tenant, kind, rate in (
        ("acme", "read", 1001),
        ("acme", "write", 1e9),
        ("acme", "read", 1e-20),
        ("a", "read", -1),
    ):
        with pytest.raises(MeshError) as refused:
            bounds.check(tenant, kind, rate, f"{kind}_per_s")
        assert refused.value.field == f"{kind}_per_s" and refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(MeshError):
        bounds.check("acme", "read", float("nan"), "read_per_s")
    # A key stored before the bounds (or under a higher ceiling) is held to today's.
    assert bounds.effective("acme", "read", 1e9) == 1000 and bounds.effective("acme", "read", 1e-20) == 0.01


def test_the_default_key_rates_must_lie_within_the_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHSEARCH_API_RATE_LIMIT_READ_PER_S", "5000")
    with pytest.raises(ValueError, match="MESHSEARCH_API_KEY_MAX_READ_PER_S"):
        ApiSettings()
    monkeypatch.setenv("MESHSEARCH_API_KEY_MAX_READ_PER_S", "5000")
    assert ApiSettings().key_rate_bounds().ceiling("anyone", "read") == 5000


async def test_a_bucket_redis_refuses_is_decided_locally_without_moving_other_keys_off_redis() -> None:
    class RefusingScript:
        def __init__(self) -> None:
            self.calls: list[str] = []

        async def __call__(self, keys: list[str], args: list[float]) -> list[int]:
            self.calls.append(keys[0])
            if "odd" in keys[0]:
                raise redis.ResponseError("ERR value is out of range")
            return [1, 3, 0]

    limiter = RateLimiter(None, burst_s=1.0, fallback_s=60.0, clock=FakeClock())
    script = RefusingScript()
    limiter._script = script  # type: ignore[assignment]  # a Redis that refuses one bucket's numbers
    assert (await limiter.take("odd", "read", rate=5)).allowed  # decided by this replica
    assert (await limiter.take("even", "read", rate=5)).remaining == 3  # still the shared bucket
    assert script.calls == ["meshsearch:rate:odd:read", "meshsearch:rate:even:read"]
