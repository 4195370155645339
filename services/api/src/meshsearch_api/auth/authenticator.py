"""From an `authorization` header to a Principal, paying the slow hash once per key.

Two caches, because the two facts they hold age differently:
- a key's row (tenant, roles, limits, revoked or not) is read from the database at most once per
  `cache_ttl_s` per key id: a cheap indexed lookup, and the bound on how long a revoked key keeps
  working on a replica that did not revoke it;
- that a presented secret matches a row's argon2id hash never changes while the hash does not,
  so it is remembered for an hour (by a SHA-256 of the key, never the key). A busy key therefore
  pays the tens of milliseconds of argon2 once, not once per TTL.
Failed verifications are remembered for `cache_ttl_s` too, so a repeated wrong key costs no CPU,
and a key id whose secret was wrong too often is not verified again for a while
(`meshsearch_api.auth.failures`). Concurrent first calls share one lookup and one verification;
at most `max_concurrent_verifications` run at a time and at most `max_waiting_verifications`
wait (more are refused RESOURCE_EXHAUSTED): a flood of made-up secrets costs a bounded share of
CPU and memory, not every core.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from datetime import UTC, datetime
from typing import TypeVar, cast

from cachetools import TTLCache
from prometheus_client import Counter

from meshsearch_api.auth import keys
from meshsearch_api.auth.failures import LOCKOUTS, FailureCounter
from meshsearch_api.auth.key_store import KeyStore, StoredKey
from meshsearch_api.auth.principal import Principal, Role
from meshsearch_common.clocks import Clock, WallClock, utc_now
from meshsearch_common.errors import ResourceExhausted, Unauthenticated
from meshsearch_common.readiness import Readiness

log = logging.getLogger(__name__)

AUTHENTICATIONS = Counter(
    "meshsearch_api_authentications_total", "Credentials checked, by outcome and whether cached.", ["outcome", "cached"]
)
SCHEME = "bearer"
CACHE_ENTRIES = 10_000
VERIFIED_TTL_S = 3600.0
T = TypeVar("T")
HOW_TO = "send 'authorization: Bearer <API key>' metadata (meshsearch keys create makes a key)"


def _refused(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason)


class Authenticator:
    def __init__(
        self,
        store: Readiness[KeyStore],
        cache_ttl_s: float,
        bootstrap_key: str = "",
        max_concurrent_verifications: int = 2,
        clock: Clock = time.monotonic,
        wall_clock: WallClock = utc_now,
        max_waiting_verifications: int = 64,
        key_failures: FailureCounter | None = None,
    ) -> None:
        self._store = store
        self._wall_clock = wall_clock
        self._bootstrap_digest = hashlib.sha256(bootstrap_key.encode()).digest() if bootstrap_key else b""
        self._rows: TTLCache[str, StoredKey | None] = TTLCache(CACHE_ENTRIES, cache_ttl_s, timer=clock)
        self._verified: TTLCache[bytes, str] = TTLCache(CACHE_ENTRIES, VERIFIED_TTL_S, timer=clock)
        self._refused: TTLCache[bytes, str] = TTLCache(CACHE_ENTRIES, cache_ttl_s, timer=clock)
        self._pending: dict[Hashable, asyncio.Future[object]] = {}
        self._verifications = asyncio.Semaphore(max_concurrent_verifications)
        self._max_waiting = max_waiting_verifications
        self._waiting = 0
        self._key_failures = key_failures or FailureCounter(0, 1.0)
        self._decoy_hash = keys.hash_key(keys.new_key()[1])  # no caller knows its secret

    def forget_all(self) -> None:
        """Drop every cached row (after a revocation, so this replica refuses the key at once)."""
        self._rows.clear()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of an `authorization` metadata value, or UNAUTHENTICATED with a reason:
        MISSING_CREDENTIALS, MALFORMED_CREDENTIALS or INVALID_API_KEY (unknown, revoked and
        mistyped keys alike, so that the answer says nothing about which key ids exist)."""
        if not authorization:
            raise _refused("MISSING_CREDENTIALS", f"this call needs an API key: {HOW_TO}")
        if len(authorization) > keys.MAX_CREDENTIAL_CHARS:
            raise _refused("MALFORMED_CREDENTIALS", f"the authorization value is too long: {HOW_TO}")
        scheme, _, key = authorization.strip().partition(" ")
        key = key.strip()
        if scheme.lower() != SCHEME or not key:
            raise _refused("MALFORMED_CREDENTIALS", f"the authorization value is not a bearer key: {HOW_TO}")
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
        if self._bootstrap_digest and hmac.compare_digest(digest, self._bootstrap_digest):
            AUTHENTICATIONS.labels("bootstrap", "no").inc()
            return Principal("", "bootstrap", frozenset({Role.ADMIN}), system=True)
        found = await self._principal(key, digest)
        if found is None:
            raise _refused("INVALID_API_KEY", "the API key is not valid (unknown, revoked or mistyped)")
        return found

    async def _principal(self, key: str, digest: bytes) -> Principal | None:
        key_id = keys.key_id_of(key)
        if key_id is None:
            AUTHENTICATIONS.labels("invalid", "yes").inc()
            return None
        row = self._rows.get(key_id) if key_id in self._rows else await self._once(key_id, self._load_row)
        # A key id that is absent or revoked takes the same path as a live one, against a decoy
        # hash: the same argon2 work, the same caches and the same lockout, so neither the
        # answer nor its time tells a caller which key ids exist.
        live = row is not None and row.revoke_time is None
        secret_hash = row.secret_hash if row is not None and live else self._decoy_hash
        if live and self._verified.get(digest) == secret_hash:
            assert row is not None
            return _unexpired(row, cached="yes", now=self._wall_clock())
        if self._refused.get(digest) == secret_hash:
            AUTHENTICATIONS.labels("invalid", "yes").inc()
            return None
        if self._key_failures.locked(key_id):
            LOCKOUTS.labels("key").inc()
            return None
        valid = await self._once(digest, lambda _: self._verify(key, digest, secret_hash))
        if not valid or row is None or not live:
            AUTHENTICATIONS.labels("invalid", "no").inc()
            self._key_failures.record(key_id)
            return None
        return _unexpired(row, cached="no", now=self._wall_clock())

    async def _load_row(self, key_id: object) -> StoredKey | None:
        row = await self._store.get().find(str(key_id))
        self._rows[str(key_id)] = row
        return row

    async def _verify(self, key: str, digest: bytes, secret_hash: str) -> bool:
        if self._waiting >= self._max_waiting:
            raise ResourceExhausted(
                "too many API keys are being verified on this replica; retry in a second",
                1.0,
                reason="VERIFICATION_QUEUE_FULL",
            )
        self._waiting += 1
        try:
            await self._verifications.acquire()
        finally:
            self._waiting -= 1
        try:
            valid = await asyncio.to_thread(keys.verify_key, secret_hash, key)
        finally:
            self._verifications.release()
        (self._verified if valid else self._refused)[digest] = secret_hash
        return valid

    async def _once(self, name: Hashable, work: Callable[[Hashable], Awaitable[T]]) -> T:
        """`work(name)` run once however many calls ask for `name` at the same time."""
        pending = self._pending.get(name)
        if pending is not None:
            return cast(T, await asyncio.shield(pending))
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        try:
            result = await work(name)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved when no one else waits
            raise
        finally:
            del self._pending[name]


def _unexpired(row: StoredKey, cached: str, now: datetime) -> Principal:
    """The principal of a key whose secret was verified, unless the key has expired. Only the
    holder of the secret learns that it expired (an unverified caller gets INVALID_API_KEY), so
    this tells nothing to someone who merely knows a key id."""
    if row.expired(now):
        AUTHENTICATIONS.labels("expired", cached).inc()
        assert row.expire_time is not None
        raise _refused(
            "API_KEY_EXPIRED",
            f"the API key expired at {row.expire_time.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}: "
            "ask an admin of your tenant for a new one (meshsearch keys create)",
        )
    AUTHENTICATIONS.labels("valid", cached).inc()
    return principal_of(row)


def principal_of(stored: StoredKey) -> Principal:
    return Principal(stored.tenant, stored.key_id, stored.roles, stored.read_per_s, stored.write_per_s)
