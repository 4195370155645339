"""API keys in the api's PostgreSQL database (the jobs database; table created by its
migrations): one row per key, holding its argon2id hash, never the key itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from meshsearch_api.auth.principal import Role
from meshsearch_api.database import KEYS
from meshsearch_common.database import database_errors
from meshsearch_common.errors import NotFound

_COLUMNS = "key_id, tenant, roles, name, secret_hash, read_per_s, write_per_s, create_time, revoke_time, expire_time"


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    tenant: str
    roles: frozenset[Role]
    name: str
    secret_hash: str
    read_per_s: float = 0.0
    write_per_s: float = 0.0
    create_time: datetime | None = None
    revoke_time: datetime | None = None
    expire_time: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expire_time is not None and now >= self.expire_time


def _key(row: dict[str, Any]) -> StoredKey:
    return StoredKey(
        key_id=row["key_id"],
        tenant=row["tenant"],
        roles=frozenset(Role(role) for role in row["roles"]),
        name=row["name"],
        secret_hash=row["secret_hash"],
        read_per_s=row["read_per_s"],
        write_per_s=row["write_per_s"],
        create_time=row["create_time"],
        revoke_time=row["revoke_time"],
        expire_time=row["expire_time"],
    )


class KeyStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def insert(self, key: StoredKey) -> StoredKey:
        async with database_errors(self._pool, KEYS), self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "INSERT INTO meshsearch_api_keys "
                "(key_id, tenant, roles, name, secret_hash, read_per_s, write_per_s, expire_time) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
                (
                    key.key_id,
                    key.tenant,
                    sorted(role.value for role in key.roles),
                    key.name,
                    key.secret_hash,
                    key.read_per_s,
                    key.write_per_s,
                    key.expire_time,
                ),
            )
            row = await cursor.fetchone()
            assert row is not None
            return _key(row)

    async def find(self, key_id: str) -> StoredKey | None:
        async with database_errors(self._pool, KEYS), self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(f"SELECT {_COLUMNS} FROM meshsearch_api_keys WHERE key_id = %s", (key_id,))
            row = await cursor.fetchone()
            return _key(row) if row else None

    async def list(self, tenant: str, limit: int, after: tuple[datetime, str] | None) -> tuple[list[StoredKey], bool]:
        """The tenant's keys oldest first, after the (creation time, key id) position `after`
        (None from the start); and whether more follow. The position is compared, never looked
        up, so no key id of another tenant changes what a page holds."""
        created, key_id = after or (None, "")
        async with database_errors(self._pool, KEYS), self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                f"SELECT {_COLUMNS} FROM meshsearch_api_keys WHERE tenant = %s AND "
                "(%s::timestamptz IS NULL OR (create_time, key_id) > (%s::timestamptz, %s)) "
                "ORDER BY create_time, key_id LIMIT %s",
                (tenant, created, created, key_id, limit + 1),
            )
            rows = await cursor.fetchall()
        return [_key(row) for row in rows[:limit]], len(rows) > limit

    async def purge_ended(self, retention_s: float, limit: int) -> int:
        """Delete keys revoked or expired more than `retention_s` ago; return how many. They
        can never authenticate again, and a tenant that rotates keys often would otherwise
        leave a row behind for every one. Until then ListApiKeys shows them, for audit."""
        async with database_errors(self._pool, KEYS), self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM meshsearch_api_keys WHERE key_id IN (SELECT key_id FROM meshsearch_api_keys "
                "WHERE (revoke_time IS NOT NULL OR expire_time IS NOT NULL) "  # the index's predicate
                "AND least(revoke_time, expire_time) < clock_timestamp() - make_interval(secs => %s) LIMIT %s)",
                (retention_s, limit),
            )
            return cursor.rowcount

    async def revoke(self, key_id: str, tenant: str | None) -> StoredKey:
        """Revoke a key of `tenant` (any tenant's when None); revoking twice keeps the first time."""
        async with database_errors(self._pool, KEYS), self._pool.connection() as conn:
            cursor = conn.cursor(row_factory=dict_row)
            await cursor.execute(
                "UPDATE meshsearch_api_keys SET revoke_time = coalesce(revoke_time, clock_timestamp()) "
                f"WHERE key_id = %s AND (%s::text IS NULL OR tenant = %s) RETURNING {_COLUMNS}",
                (key_id, tenant, tenant),
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"API key '{key_id}' does not exist", field="key_id")
        return _key(row)
