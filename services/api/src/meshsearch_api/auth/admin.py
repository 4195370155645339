"""Managing API keys: who may make, list and revoke which keys.

An admin key manages the keys of its own tenant; the bootstrap key (configured by the
operator) those of any tenant, which each call must then name. A key of another tenant is
absent (NOT_FOUND), exactly like a key id that does not exist.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from meshsearch_api.auth import keys, principal
from meshsearch_api.auth.authenticator import Authenticator
from meshsearch_api.auth.key_rates import KeyRateBounds
from meshsearch_api.auth.key_store import KeyStore, StoredKey
from meshsearch_api.auth.principal import Role
from meshsearch_common import names, pages
from meshsearch_common.errors import InvalidArgument, PermissionDenied
from meshsearch_common.identifiers import check_key_id

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 200
MAX_LIFETIME = timedelta(days=3653)  # ten years: further is a typo, or a key meant never to expire


def expiry(expire_time: datetime | None, ttl: timedelta | None, now: datetime) -> datetime | None:
    """When a new key made at `now` stops working (None: never), from one of the two ways a
    caller may say it; INVALID_ARGUMENT for a time that is past or more than ten years away."""
    if ttl is not None:
        if not timedelta(0) < ttl <= MAX_LIFETIME:
            raise InvalidArgument(f"ttl must be positive and at most {MAX_LIFETIME.days} days", field="ttl")
        return now + ttl
    if expire_time is not None and not now < expire_time <= now + MAX_LIFETIME:
        raise InvalidArgument(
            f"expire_time must be in the future and at most {MAX_LIFETIME.days} days away "
            f"(it is {expire_time.isoformat()}, the server's time is {now.isoformat()})",
            field="expire_time",
        )
    return expire_time


class KeyAdmin:
    def __init__(self, store: KeyStore, authenticator: Authenticator | None, rates: KeyRateBounds) -> None:
        self._store = store
        self._authenticator = authenticator
        self._rates = rates

    @staticmethod
    def _tenant(requested: str) -> str:
        """The tenant a call may act on: its own, or any one named by the bootstrap key."""
        caller = principal.current()
        if caller.system:
            if not requested:
                raise InvalidArgument("tenant is required when the bootstrap key calls", field="tenant")
        elif requested and requested != caller.tenant:
            raise PermissionDenied(
                f"an admin key manages the keys of its own tenant ('{caller.tenant}') only", reason="OTHER_TENANT"
            )
        tenant = requested or caller.tenant
        if not names.TENANT.match(tenant):
            raise InvalidArgument(f"invalid tenant {tenant!r}: use {names.TENANT_RULE}", field="tenant")
        return tenant

    async def create(
        self,
        tenant: str,
        roles: list[Role],
        name: str,
        read_per_s: float,
        write_per_s: float,
        expire_time: datetime | None = None,
        ttl: timedelta | None = None,
    ) -> tuple[StoredKey, str]:
        """A new key and its secret (returned once, never stored); it expires at `expire_time`
        or `ttl` after now (neither: never)."""
        owner = self._tenant(tenant)
        expires = expiry(expire_time, ttl, datetime.now(UTC))
        if not roles:
            raise InvalidArgument("roles must hold at least one role", field="roles")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"name is longer than {MAX_NAME_CHARS} characters", field="name")
        self._rates.check(owner, "read", read_per_s, "read_per_s")
        self._rates.check(owner, "write", write_per_s, "write_per_s")
        key_id, secret = keys.new_key()
        key_hash = await asyncio.to_thread(keys.hash_key, secret)
        stored = await self._store.insert(
            StoredKey(key_id, owner, frozenset(roles), name, key_hash, read_per_s, write_per_s, expire_time=expires)
        )
        log.info(
            "API key created",
            extra={
                "key_id": key_id,
                "tenant": owner,
                "roles": sorted(r.value for r in roles),
                "expire_time": expires.isoformat() if expires else None,
            },
        )
        return stored, secret

    async def list(self, tenant: str, page_size: int, page_token: str) -> tuple[list[StoredKey], str]:
        owner = self._tenant(tenant)
        size = pages.checked_size(page_size)
        after = pages.decode_position(page_token, "page_token", check_key_id) if page_token else None
        found, more = await self._store.list(owner, size, after)
        if not more:
            return found, ""
        last = found[-1]
        assert last.create_time is not None  # a stored key always has one
        return found, pages.encode_position(last.create_time, last.key_id)

    async def revoke(self, key_id: str) -> StoredKey:
        check_key_id(key_id)
        caller = principal.current()
        revoked = await self._store.revoke(key_id, None if caller.system else caller.tenant)
        if self._authenticator is not None:
            self._authenticator.forget_all()
        log.info("API key revoked", extra={"key_id": key_id, "tenant": revoked.tenant})
        return revoked
