"""The embedded state Redis (rate-limit buckets, quota counters, request keys) keeps what it held
through a crash, in a directory only its user may enter; the embedding cache starts empty, as a
cache may."""

from __future__ import annotations

import time
from pathlib import Path

import redis

from meshsearch_cli.stack import EmbeddedStack, Ports


def test_the_state_redis_keeps_its_keys_through_kill_9_and_the_cache_does_not(tmp_path: Path) -> None:
    stack = EmbeddedStack(tmp_path, Ports.ephemeral())
    try:
        stack.start_stores(services=("api",))
        state, cache = redis.Redis.from_url(stack.state_redis_url), redis.Redis.from_url(stack.redis_url)
        state.set("quota:tenant:bytes", 12345)
        cache.set("embedding:x", b"vector")
        time.sleep(1.5)  # appendfsync everysec: what was written a second ago is on disk
        for name in ("redis-state", "redis"):
            stack.kill(name)
            stack.restart(name)
        state, cache = redis.Redis.from_url(stack.state_redis_url), redis.Redis.from_url(stack.redis_url)
        assert state.get("quota:tenant:bytes") == b"12345"
        assert (tmp_path / "redis-state").stat().st_mode & 0o077 == 0  # its file: for this user alone
        assert cache.get("embedding:x") is None
    finally:
        stack.stop()
