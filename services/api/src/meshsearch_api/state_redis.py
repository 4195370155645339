"""The Redis that holds state (rate-limit buckets, quota counters, request keys) must not evict
it: an evicted bucket restarts full, an evicted counter forgets a tenant's spending, an evicted
request key lets a retried write run twice. Only the Redis's own policy can promise that, so the
api asks it once at start and says so in the log when it cannot."""

from __future__ import annotations

import logging

import redis.asyncio as redis

log = logging.getLogger(__name__)

SAFE_POLICIES = frozenset({"noeviction"})


async def eviction_policy(client: redis.Redis) -> str | None:
    """The Redis's maxmemory-policy, or None when it will not say (CONFIG is often renamed or
    refused on managed Redis, and the Redis may not be up yet)."""
    try:
        answer = await client.config_get("maxmemory-policy")
    except (redis.RedisError, OSError):
        return None
    for policy in answer.values():  # the one setting asked for; bytes unless the client decodes
        return policy.decode() if isinstance(policy, bytes) else str(policy)
    return None


async def warn_if_evicting(client: redis.Redis) -> None:
    """Log a warning when the state Redis may evict keys under memory pressure."""
    policy = await eviction_policy(client)
    if policy is None:
        log.info("the state redis's maxmemory-policy is unknown; it must be noeviction")
    elif policy not in SAFE_POLICIES:
        log.warning(
            "the state redis may evict rate-limit buckets, quota counters and request keys under memory "
            "pressure: set MESHSEARCH_API_STATE_REDIS_URL to a Redis with maxmemory-policy noeviction",
            extra={"maxmemory_policy": policy},
        )
