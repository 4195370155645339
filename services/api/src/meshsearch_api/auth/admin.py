"""Managing API keys: who may make, list and revoke which keys.

An admin key manages the keys of its own tenant; the bootstrap key (configured by the
operator) those of any tenant, which each call must then name. A key of another tenant is
absent (NOT_FOUND), exactly like a key id that does not exist.
"""

from __future__ import annotations

import asyncio
import logging

from meshsearch_api.auth import keys, principal
from meshsearch_api.auth.authenticator import Authenticator
from meshsearch_api.auth.key_store import KeyStore, StoredKey
from meshsearch_api.auth.principal import Role
from meshsearch_common import names, pages
from meshsearch_common.errors import InvalidArgument, PermissionDenied, finite

log = logging.getLogger(__name__)

MAX_NAME_CHARS = 200


class KeyAdmin:
    def __init__(self, store: KeyStore, authenticator: Authenticator | None) -> None:
        self._store = store
        self._authenticator = authenticator

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
        self, tenant: str, roles: list[Role], name: str, read_per_s: float, write_per_s: float
    ) -> tuple[StoredKey, str]:
        """A new key and its secret (returned once, never stored)."""
        owner = self._tenant(tenant)
        if not roles:
            raise InvalidArgument("roles must hold at least one role", field="roles")
        if len(name) > MAX_NAME_CHARS:
            raise InvalidArgument(f"name is longer than {MAX_NAME_CHARS} characters", field="name")
        for field, rate in (("read_per_s", read_per_s), ("write_per_s", write_per_s)):
            if finite(rate, field) < 0:
                raise InvalidArgument(f"{field} must be 0 (the server's default) or positive", field=field)
        key_id, secret = keys.new_key()
        key_hash = await asyncio.to_thread(keys.hash_key, secret)
        stored = await self._store.insert(
            StoredKey(key_id, owner, frozenset(roles), name, key_hash, read_per_s, write_per_s)
        )
        log.info("API key created", extra={"key_id": key_id, "tenant": owner, "roles": sorted(r.value for r in roles)})
        return stored, secret

    async def list(self, tenant: str, page_size: int, page_token: str) -> tuple[list[StoredKey], str]:
        owner = self._tenant(tenant)
        size = pages.checked_size(page_size)
        after = pages.decode(page_token, "page_token") if page_token else ""
        found, more = await self._store.list(owner, size, after)
        return found, pages.encode(found[-1].key_id) if more else ""

    async def revoke(self, key_id: str) -> StoredKey:
        if not key_id:
            raise InvalidArgument("key_id is required", field="key_id")
        caller = principal.current()
        revoked = await self._store.revoke(key_id, None if caller.system else caller.tenant)
        if self._authenticator is not None:
            self._authenticator.forget_all()
        log.info("API key revoked", extra={"key_id": key_id, "tenant": revoked.tenant})
        return revoked
