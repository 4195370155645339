"""A slot for a service's core that is filled once start-up completes.

gRPC servicers must be registered before the server starts, but the core (a loaded model,
an open pool) only exists after start-up. Servicers read the core through this slot, so a
call that slips in before readiness gets UNAVAILABLE rather than an AttributeError.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from meshsearch_common.errors import MeshError, Unavailable

T = TypeVar("T")


class Readiness(Generic[T]):
    def __init__(self, what: str) -> None:
        self._what = what
        self._value: T | None = None
        self._disabled: MeshError | None = None

    def set(self, value: T) -> None:
        self._value = value

    def disable(self, why: MeshError) -> None:
        """This part will never be ready (not configured): calls get `why` instead of UNAVAILABLE."""
        self._disabled = why

    def get(self) -> T:
        if self._disabled is not None:
            raise self._disabled
        if self._value is None:
            raise Unavailable(f"{self._what} is still starting; retry shortly")
        return self._value
