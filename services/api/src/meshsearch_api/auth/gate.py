"""The decision taken before every public RPC: who calls (authentication), whether it may
(its roles against the method's), and whether it may now (its rate limit)."""

from __future__ import annotations

from dataclasses import dataclass

from meshsearch_api.auth import permissions
from meshsearch_api.auth.authenticator import Authenticator
from meshsearch_api.auth.key_rates import KeyRateBounds
from meshsearch_api.auth.principal import ANONYMOUS, Principal
from meshsearch_api.auth.rate_limits import Decision, RateLimiter
from meshsearch_common.errors import PermissionDenied, ResourceExhausted


class RateLimited(ResourceExhausted):
    """A call refused by its key's rate limit; `decision` fills the rate-limit headers."""

    def __init__(self, message: str, decision: Decision, kind: str, quota_subject: str) -> None:
        super().__init__(message, decision.retry_after_s, reason="RATE_LIMITED", quota_subject=quota_subject)
        self.decision = decision
        self.kind = kind


@dataclass(frozen=True)
class Authorized:
    """A call the gate let through: who makes it, and what it spent of their rate."""

    principal: Principal
    rate: Decision | None  # None when the call is not rate-limited (auth off)
    rate_kind: str


class Gate:
    def __init__(
        self,
        authenticator: Authenticator | None,
        limiter: RateLimiter,
        default_read_per_s: float,
        default_write_per_s: float,
        bounds: KeyRateBounds | None = None,
    ) -> None:
        """`authenticator` None: auth is off, every call acts as the default tenant, unlimited.
        `bounds` hold every key's rate within its tenant's ceiling (none: no bounds)."""
        self._authenticator = authenticator
        self._bounds = bounds
        self._limiter = limiter
        self._read_per_s = default_read_per_s
        self._write_per_s = default_write_per_s

    async def revalidate(self, authorization: str | None) -> None:
        """Raise UNAUTHENTICATED unless the credentials that opened a stream are still valid
        (neither revoked nor expired); spends nothing of the key's rate."""
        if self._authenticator is not None:
            await self._authenticator.authenticate(authorization)

    async def admit(self, method: str, authorization: str | None) -> Principal:
        """Who calls `method`, if it may: decided from the call's metadata alone, so that a
        refused caller's request is never read."""
        role = permissions.METHOD_ROLES.get(method)
        if role is None:
            raise PermissionDenied(f"{method} has no access rule on this server", reason="NO_ACCESS_RULE")
        if self._authenticator is None:
            return ANONYMOUS
        caller = await self._authenticator.authenticate(authorization)
        if caller.system and permissions.service_of(method) != permissions.KEY_SERVICE:
            raise PermissionDenied(
                "the bootstrap key only manages API keys; create a key for a tenant to reach its data",
                reason="BOOTSTRAP_KEY_MANAGES_KEYS_ONLY",
            )
        if role not in caller.roles:
            held = ", ".join(sorted(r.value for r in caller.roles)) or "none"
            raise PermissionDenied(
                f"{method} needs the {role.value} role; this key holds: {held}", reason="MISSING_ROLE"
            )
        return caller

    async def spend(self, caller: Principal, method: str, cost: int = 1) -> Authorized:
        """The rate-limit decision for an admitted call of `cost` units (permissions.cost)."""
        kind = permissions.rate_class(permissions.METHOD_ROLES[method])
        if self._authenticator is None:
            return Authorized(caller, None, kind)
        rate = (caller.read_per_s or self._read_per_s) if kind == "read" else (caller.write_per_s or self._write_per_s)
        if self._bounds is not None:
            rate = self._bounds.effective(caller.tenant, kind, rate)
        decision = await self._limiter.take(caller.key_id, kind, rate, cost)
        if not decision.allowed:
            raise RateLimited(
                f"rate limit of this key reached: {rate:g} {kind}s per second"
                + (f" (this call counts as {cost})" if cost > 1 else "")
                + f"; retry after {decision.retry_after_s:.3f} s",
                decision,
                kind,
                f"key:{caller.key_id}:{kind}",
            )
        return Authorized(caller, decision, kind)
