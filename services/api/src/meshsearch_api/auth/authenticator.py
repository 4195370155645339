"""From an `authorization` header to a Principal, paying the slow hash once per key.

Verified answers (a key's principal, or "not valid") are cached for `cache_ttl_s`, keyed by
a SHA-256 of the presented key, so a busy key costs one argon2 verification per TTL and a
revoked key stops working on every replica within that TTL. Concurrent first calls with one
key share one verification, and at most `max_concurrent_verifications` run at a time: a flood
of made-up keys costs a bounded share of CPU, not every core.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time

from cachetools import TTLCache
from prometheus_client import Counter

from meshsearch_api.auth import keys
from meshsearch_api.auth.key_store import KeyStore, StoredKey
from meshsearch_api.auth.principal import Principal, Role
from meshsearch_common.errors import Unauthenticated
from meshsearch_common.readiness import Readiness

log = logging.getLogger(__name__)

AUTHENTICATIONS = Counter(
    "meshsearch_api_authentications_total", "Credentials checked, by outcome and whether cached.", ["outcome", "cached"]
)
SCHEME = "bearer"
CACHE_ENTRIES = 10_000
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
    ) -> None:
        self._store = store
        self._bootstrap_digest = hashlib.sha256(bootstrap_key.encode()).digest() if bootstrap_key else b""
        self._cache: TTLCache[bytes, Principal | None] = TTLCache(CACHE_ENTRIES, cache_ttl_s, timer=time.monotonic)
        self._pending: dict[bytes, asyncio.Future[Principal | None]] = {}
        self._verifications = asyncio.Semaphore(max_concurrent_verifications)

    def forget_all(self) -> None:
        """Drop every cached answer (after a revocation, so this replica refuses the key at once)."""
        self._cache.clear()

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
        if digest in self._cache:
            found = self._cache[digest]
            AUTHENTICATIONS.labels("valid" if found else "invalid", "yes").inc()
        else:
            found = await self._verify_once(digest, key)
            AUTHENTICATIONS.labels("valid" if found else "invalid", "no").inc()
        if found is None:
            raise _refused("INVALID_API_KEY", "the API key is not valid (unknown, revoked or mistyped)")
        return found

    async def _verify_once(self, digest: bytes, key: str) -> Principal | None:
        """One verification of `key` however many calls present it at once."""
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            found = await self._verify(key)
            self._cache[digest] = found
            future.set_result(found)
            return found
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved when no one else waits
            raise
        finally:
            del self._pending[digest]

    async def _verify(self, key: str) -> Principal | None:
        key_id = keys.key_id_of(key)
        if key_id is None:
            return None
        stored = await self._store.get().find(key_id)
        if stored is None or stored.revoke_time is not None:
            return None
        async with self._verifications:
            valid = await asyncio.to_thread(keys.verify_key, stored.secret_hash, key)
        return principal_of(stored) if valid else None


def principal_of(stored: StoredKey) -> Principal:
    return Principal(stored.tenant, stored.key_id, stored.roles, stored.read_per_s, stored.write_per_s)
