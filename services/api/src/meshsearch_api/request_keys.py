"""Request keys: a retried write that carries the key of an earlier one gets that call's answer
back instead of redoing its work (embedding is the expensive part of a write).

A key is claimed in Redis with SET NX for as long as the call may run; its answer then replaces
the claim for `ttl_s`. A retry that arrives while the first call still runs waits for its
answer (within its own deadline). If the first call fails, its claim is dropped and the retry
does the work. The same key with a different request is refused: it is a caller's bug that
would otherwise return an answer to another question.

Without Redis (disabled, or failing) the call simply runs: IndexDocuments is idempotent by
document id, so running it twice stores the same documents; only the work is repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
from collections.abc import Awaitable, Callable

import redis.asyncio as redis
from prometheus_client import Counter

from meshsearch_api.auth import principal
from meshsearch_common import context
from meshsearch_common.errors import DeadlineExceeded, InvalidArgument

log = logging.getLogger(__name__)

REQUEST_KEYS = Counter("meshsearch_api_request_keys_total", "Writes carrying a request key, by outcome.", ["outcome"])
KEY_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
POLL_S = 0.05
_RUNNING, _DONE = b"running:", b"done:"


class RequestKeys:
    def __init__(self, client: redis.Redis | None, ttl_s: int) -> None:
        self._client = client
        self._ttl_s = ttl_s

    async def run(self, scope: str, key: str, request: bytes, work: Callable[[], Awaitable[bytes]]) -> bytes:
        """The answer (serialized response) of the first call with `key` in `scope`, running
        `work` only when there is none."""
        if not KEY_PATTERN.match(key):
            raise InvalidArgument(
                "request_key must be 1 to 128 printable ASCII characters without spaces (a UUID works)",
                field="request_key",
            )
        if self._client is None:
            return await work()
        digest = hashlib.sha256(request).hexdigest().encode()
        name = f"meshsearch:request:{principal.tenant()}:{scope}:{key}"  # keys are the tenant's own
        try:
            while True:
                remaining = context.remaining_seconds()
                lease_s = max(1, math.ceil(remaining)) + 1 if remaining is not None else self._ttl_s
                if await self._client.set(name, _RUNNING + digest, nx=True, ex=lease_s):
                    break
                stored = await self._client.get(name)
                assert stored is None or isinstance(stored, bytes)  # the client returns raw bytes
                if stored is None:
                    continue  # the first call failed and dropped its claim: this one runs
                if not stored.endswith(digest) and not stored.startswith(_DONE + digest):
                    REQUEST_KEYS.labels("reused").inc()
                    raise InvalidArgument(
                        f"request_key {key!r} was used for a different request; use a new key for new work",
                        field="request_key",
                    )
                if stored.startswith(_DONE):
                    REQUEST_KEYS.labels("replayed").inc()
                    return stored[len(_DONE) + len(digest) + 1 :]
                if remaining is not None and remaining < 2 * POLL_S:
                    raise DeadlineExceeded(f"the first call with request_key {key!r} is still running; retry")
                await asyncio.sleep(POLL_S)
        except (redis.RedisError, OSError) as exc:
            log.warning("request keys unavailable; running the call without one", extra={"error": str(exc)})
            REQUEST_KEYS.labels("unavailable").inc()
            return await work()
        try:
            answer = await work()
        except BaseException:
            await self._forget(name)
            raise
        try:
            await self._client.set(name, _DONE + digest + b":" + answer, ex=self._ttl_s)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not record the answer of a request key", extra={"error": str(exc)})
        REQUEST_KEYS.labels("ran").inc()
        return answer

    async def _forget(self, name: str) -> None:
        assert self._client is not None
        try:
            await self._client.delete(name)
        except (redis.RedisError, OSError):
            pass  # the claim expires with its lease
