"""Per-key rate limits: a token bucket per (key, read|write), shared by every api replica.

The bucket lives in Redis and is updated by one Lua script (read, refill, take, write in one
atomic step on the server's clock), so replicas never race each other. When Redis fails, this
replica falls back to a bucket of its own with the same rate for `fallback_s` before trying
Redis again: limits then hold per replica (so N replicas admit up to N times the rate), which
is logged and counted, but never become no limits at all.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import redis.asyncio as redis
from cachetools import TTLCache
from prometheus_client import Counter

from meshsearch_common.clocks import Clock

log = logging.getLogger(__name__)

DECISIONS = Counter(
    "meshsearch_api_rate_limit_total", "Rate-limit decisions, by class and outcome.", ["kind", "outcome"]
)
FALLBACKS = Counter(
    "meshsearch_api_rate_limit_fallback_total", "Decisions taken by the local limiter because Redis failed."
)

# KEYS[1]: the bucket. ARGV: rate (tokens/s), capacity, cost. Returns {allowed, tokens left, wait ms}.
_TOKEN_BUCKET = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate / 1000)
local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 1000)
return {allowed, tostring(tokens), wait_ms}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit_per_s: float
    remaining: int  # whole calls that may be made now
    retry_after_s: float  # when refused: how long until one call is allowed


class _LocalBucket:
    def __init__(self, capacity: float, clock: Clock) -> None:
        self.tokens = capacity
        self._clock = clock
        self.at = clock()

    def take(self, rate: float, capacity: float, cost: float) -> tuple[bool, float, float]:
        now = self._clock()
        self.tokens = min(capacity, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True, self.tokens, 0.0
        return False, self.tokens, (cost - self.tokens) / rate


class RateLimiter:
    def __init__(
        self, client: redis.Redis | None, burst_s: float, fallback_s: float, clock: Clock = time.monotonic
    ) -> None:
        self._client = client
        self._clock = clock
        self._script = client.register_script(_TOKEN_BUCKET) if client is not None else None
        self._burst_s = burst_s
        self._fallback_s = fallback_s
        self._redis_failed_at = -math.inf
        self._local: TTLCache[str, _LocalBucket] = TTLCache(100_000, ttl=600, timer=clock)

    def capacity(self, rate: float) -> float:
        """Bucket size: `burst_s` seconds of calls, and at least one."""
        return max(1.0, rate * self._burst_s)

    async def take(self, key_id: str, kind: str, rate: float, cost: int = 1) -> Decision:
        """Take `cost` calls of `kind` (read or write) from key `key_id`'s bucket of `rate` calls/s.
        A cost above the bucket's size takes the whole bucket: such a call waits for a full
        bucket rather than being refused for good."""
        bucket = f"meshsearch:rate:{key_id}:{kind}"
        capacity = self.capacity(rate)
        units = min(float(cost), capacity)
        result = await self._take_shared(bucket, rate, capacity, units)
        if result is None:
            FALLBACKS.inc()
            local = self._local.get(bucket)
            if local is None:
                local = self._local[bucket] = _LocalBucket(capacity, self._clock)
            result = local.take(rate, capacity, units)
        allowed, tokens, wait_s = result
        DECISIONS.labels(kind, "allowed" if allowed else "refused").inc()
        return Decision(allowed, rate, int(tokens), wait_s)

    async def _take_shared(
        self, bucket: str, rate: float, capacity: float, units: float
    ) -> tuple[bool, float, float] | None:
        """The shared bucket's answer, or None when Redis is off, failing, or failed lately."""
        if self._script is None or self._clock() - self._redis_failed_at < self._fallback_s:
            return None
        try:
            allowed, tokens, wait_ms = await self._script(keys=[bucket], args=[rate, capacity, units])
        except redis.ResponseError as exc:
            # The script refused this bucket's numbers: a fault of this call, not of Redis, so
            # no other key leaves the shared buckets for it.
            log.warning("a rate-limit bucket was decided locally", extra={"bucket": bucket, "error": str(exc)})
            return None
        except (redis.RedisError, OSError) as exc:
            self._redis_failed_at = self._clock()
            log.warning(
                "rate limits fall back to this replica's own buckets: Redis failed",
                extra={"error": str(exc), "retry_redis_after_s": self._fallback_s},
            )
            return None
        return bool(allowed), float(tokens), float(wait_ms) / 1000
