"""Who a call acts for: the principal the auth interceptor found, kept in a context variable
for the length of the call, and the tenant namespace it gives collection names.

Everything tenant-scoped (collection names sent to the search service, jobs, cache keys)
reads the principal from here rather than taking it as a parameter, so that no code path can
forget it: with no principal set, a call acts as the default tenant (auth off). Ingest workers
set the principal of the job they run (`acting_as`).
"""

from __future__ import annotations

import contextvars
import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from meshsearch_common import names
from meshsearch_common.errors import InvalidArgument

DEFAULT_TENANT = "default"


class Role(enum.Enum):
    READ = "read"
    WRITE = "write"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """A caller: its tenant, the key it used ("" when auth is off) and what it may do.
    `system` marks the bootstrap key, which manages keys of every tenant and reaches no data."""

    tenant: str
    key_id: str
    roles: frozenset[Role]
    read_per_s: float = 0.0
    write_per_s: float = 0.0
    system: bool = False


ANONYMOUS = Principal(DEFAULT_TENANT, "", frozenset(Role))
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS)


def current() -> Principal:
    return _current.get()


def set_current(principal: Principal) -> contextvars.Token[Principal]:
    return _current.set(principal)


@contextmanager
def acting_as(tenant: str) -> Iterator[None]:
    """Run a block as `tenant` (an ingest worker running a job of that tenant)."""
    token = _current.set(Principal(tenant, "", frozenset(Role)))
    try:
        yield
    finally:
        _current.reset(token)


def tenant() -> str:
    return _current.get().tenant


def stored_collection(name: str, field: str = "collection") -> str:
    """The search service's name of the current tenant's collection `name`."""
    if not names.COLLECTION_NAME.match(name):
        raise InvalidArgument(f"invalid collection name {name!r}: use {names.COLLECTION_NAME_RULE}", field=field)
    owner = tenant()
    return name if owner == DEFAULT_TENANT else f"{owner}{names.TENANT_SEPARATOR}{name}"


def stored_namespace() -> str:
    """The search service's tenant of the current tenant's collections ("" for the default
    tenant, whose collections keep bare names)."""
    owner = tenant()
    return "" if owner == DEFAULT_TENANT else owner


def public_collection(stored: str) -> str | None:
    """The current tenant's name for stored collection `stored`, or None when it is another
    tenant's."""
    owner, separator, name = stored.rpartition(names.TENANT_SEPARATOR)
    if not separator:
        return stored if tenant() == DEFAULT_TENANT else None
    return name if owner == tenant() else None
