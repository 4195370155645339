"""Per-tenant quotas on what is stored and on how much is written per day.

- Documents stored: the tenant's collections' document counts (read from the search service,
  cached for a few seconds) plus the documents a write brings must stay within
  `max_documents`. Every document of a write counts, replacements of existing ids included,
  and concurrent writes can pass the quota by what they carry: it is a soft bound.
- Ingest volume: UTF-8 bytes of text written per UTC day (IndexDocuments and ingest uploads),
  counted in Redis so that every replica sees one total; a replica whose Redis fails counts
  on its own until it is back.
Both have one default for every tenant (0: none), which the operator may replace for named
tenants (`MESHSEARCH_API_TENANT_QUOTAS`): a team that bulk-loads gets room without lifting
everyone's bound.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

import redis.asyncio as redis
from cachetools import TTLCache
from prometheus_client import Counter

from meshsearch_api.auth import principal
from meshsearch_api.search_client import SearchClient
from meshsearch_api.settings import TenantQuota
from meshsearch_common.clocks import Clock, WallClock, utc_now
from meshsearch_common.errors import PermissionDenied, ResourceExhausted

log = logging.getLogger(__name__)

REFUSED = Counter("meshsearch_api_quota_refusals_total", "Writes refused by a tenant quota, by quota.", ["quota"])
DOCUMENTS_RETRY_AFTER_S = 60.0  # a full tenant frees room only by deleting


def _seconds_to_midnight(now: datetime) -> float:
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()


class TenantQuotas:
    def __init__(
        self,
        client: redis.Redis | None,
        search: SearchClient,
        max_documents: int,
        max_ingest_bytes_per_day: int,
        overrides: dict[str, TenantQuota] | None = None,
        count_cache_s: float = 0.0,
        clock: Clock = time.monotonic,
        wall_clock: WallClock = utc_now,
        interactive_jobs: bool = False,
        max_running_jobs: int = 0,
        max_collections: int = 0,
    ) -> None:
        self._client = client
        self._wall_clock = wall_clock
        self._search = search
        self._default = (max_documents, max_ingest_bytes_per_day)
        self._overrides = {  # merged over the defaults once here, not on every write
            tenant: (
                max_documents if quota.max_documents is None else quota.max_documents,
                max_ingest_bytes_per_day if quota.max_ingest_bytes_per_day is None else quota.max_ingest_bytes_per_day,
            )
            for tenant, quota in (overrides or {}).items()
        }
        self._interactive = {
            tenant: interactive_jobs if quota.interactive_jobs is None else quota.interactive_jobs
            for tenant, quota in (overrides or {}).items()
        }
        self._interactive_default = interactive_jobs
        self._running_jobs = {
            tenant: max_running_jobs if quota.max_running_jobs is None else quota.max_running_jobs
            for tenant, quota in (overrides or {}).items()
        }
        self._running_jobs_default = max_running_jobs
        self._collections = {
            tenant: max_collections if quota.max_collections is None else quota.max_collections
            for tenant, quota in (overrides or {}).items()
        }
        self._collections_default = max_collections
        self._counts: TTLCache[str, int] = TTLCache(10_000, count_cache_s, timer=clock)
        self._local_bytes: dict[str, int] = {}

    async def charge(self, documents: int, text_bytes: int) -> None:
        """RESOURCE_EXHAUSTED (with QuotaFailure) unless the current tenant may write
        `documents` more documents holding `text_bytes` of text."""
        if documents <= 0:
            return
        tenant = principal.tenant()
        max_documents, max_bytes = self.limits(tenant)
        if max_documents:
            await self._charge_documents(tenant, documents, max_documents)
        if max_bytes:
            await self._charge_bytes(tenant, text_bytes, max_bytes)

    def max_running_jobs(self) -> int:
        """How many ingest jobs the current caller's tenant may run at once; 0: no limit (and
        with auth off, the one local user has none)."""
        caller = principal.current()
        return self._running_jobs.get(caller.tenant, self._running_jobs_default) if caller.key_id else 0

    def max_collections(self) -> int:
        """How many collections the current caller's tenant may have; 0: no limit (none with
        auth off)."""
        caller = principal.current()
        return self._collections.get(caller.tenant, self._collections_default) if caller.key_id else 0

    def check_priority(self, interactive: bool) -> None:
        """PERMISSION_DENIED when the current caller asks for the interactive priority, which its
        tenant was not given (with auth off, the one local user has every right)."""
        caller = principal.current()
        if interactive and caller.key_id and not self._interactive.get(caller.tenant, self._interactive_default):
            raise PermissionDenied(
                "JOB_PRIORITY_INTERACTIVE is served before every other tenant's jobs and needs a right this tenant "
                "was not given (the operator's MESHSEARCH_API_TENANT_QUOTAS interactive_jobs); use "
                "JOB_PRIORITY_NORMAL or JOB_PRIORITY_BULK",
                field="start.priority",
                reason="PRIORITY_NOT_GRANTED",
            )

    def limits(self, tenant: str) -> tuple[int, int]:
        """`tenant`'s (documents, ingest bytes per day) quotas; 0: none."""
        return self._overrides.get(tenant, self._default)

    async def _charge_documents(self, tenant: str, documents: int, quota: int) -> None:
        stored = self._counts.get(tenant)
        if stored is None:
            stored = sum(info.document_count for info in await self._search.list_collections())
            self._counts[tenant] = stored
        if stored + documents > quota:
            REFUSED.labels("documents").inc()
            raise ResourceExhausted(
                f"tenant '{tenant}' stores {stored} documents; {documents} more would pass its quota of "
                f"{quota}: delete documents, or ask the operator for a larger quota",
                DOCUMENTS_RETRY_AFTER_S,
                reason="DOCUMENT_QUOTA_EXCEEDED",
                quota_subject=f"tenant:{tenant}:documents",
            )
        self._counts[tenant] = stored + documents

    async def _charge_bytes(self, tenant: str, text_bytes: int, quota: int) -> None:
        now = self._wall_clock()
        key = f"meshsearch:quota:ingest:{tenant}:{now:%Y%m%d}"
        total = await self._add_bytes(key, text_bytes)
        if total > quota:
            await self._add_bytes(key, -text_bytes)
            REFUSED.labels("ingest_bytes").inc()
            raise ResourceExhausted(
                f"tenant '{tenant}' has written {total - text_bytes} bytes of text today (UTC); {text_bytes} more "
                f"would pass its daily ingest quota of {quota} bytes: retry after midnight UTC",
                _seconds_to_midnight(now),
                reason="INGEST_QUOTA_EXCEEDED",
                quota_subject=f"tenant:{tenant}:ingest_bytes_per_day",
            )

    async def _add_bytes(self, key: str, amount: int) -> int:
        if self._client is not None:
            try:
                async with self._client.pipeline(transaction=True) as pipe:
                    pipe.incrby(key, amount)
                    pipe.expire(key, 2 * 86_400)
                    total, _ = await pipe.execute()
                return int(total)
            except (redis.RedisError, OSError) as exc:
                log.warning("ingest quota counted locally: Redis failed", extra={"error": str(exc)})
        self._local_bytes[key] = self._local_bytes.get(key, 0) + amount
        return self._local_bytes[key]
