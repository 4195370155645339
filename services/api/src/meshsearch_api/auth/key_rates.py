"""How fast a key may be made: every key's read and write rates lie between one floor and its
tenant's ceilings, checked when the key is created and again on every call (a key stored before
the ceilings existed, or under a higher one, is held to today's).

Without bounds a tenant admin could mint a key with 1e9 reads per second (never limited) or
1e-20 (a token bucket that refills once in ages, with waits past what Redis's arithmetic
holds). The ceilings have one default for every tenant, which the operator may replace for named
tenants (`MESHSEARCH_API_TENANT_QUOTAS`: `max_read_per_s`, `max_write_per_s`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshsearch_common.errors import InvalidArgument, finite


@dataclass(frozen=True)
class KeyRateBounds:
    floor_per_s: float
    max_read_per_s: float
    max_write_per_s: float
    tenants: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # ceilings by tenant

    def ceiling(self, tenant: str, kind: str) -> float:
        """The most calls per second of `kind` ("read" or "write") any key of `tenant` gets."""
        read, write = self.tenants.get(tenant, (None, None))
        if kind == "read":
            return self.max_read_per_s if read is None else read
        return self.max_write_per_s if write is None else write

    def check(self, tenant: str, kind: str, rate: float, field_name: str) -> float:
        """`rate` for a new key (0: the server's default), or INVALID_ARGUMENT naming the bounds."""
        finite(rate, field_name)
        if rate == 0:
            return rate
        ceiling = self.ceiling(tenant, kind)
        if not self.floor_per_s <= rate <= ceiling:
            raise InvalidArgument(
                f"{field_name} {rate:g} is out of range: 0 (the server's default) or {self.floor_per_s:g} to "
                f"{ceiling:g} for tenant '{tenant}' (the operator sets the ceiling)",
                field=field_name,
            )
        return rate

    def effective(self, tenant: str, kind: str, rate: float) -> float:
        """The rate a call is held to: the key's, within today's bounds."""
        return min(max(rate, self.floor_per_s), self.ceiling(tenant, kind))
