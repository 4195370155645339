"""How database failures reach callers: each as a status a caller can act on, never INTERNAL."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg import errors as pg_errors

from meshsearch_common.database import DISK_FULL_RETRY_S, DatabaseRole, database_errors
from meshsearch_common.errors import ResourceExhausted, Unavailable

ROLE = DatabaseRole("the test database", "TEST_DATABASE_UNAVAILABLE", "MESHSEARCH_TEST_POOL_SIZE")
NO_POOL: Any = None  # these failures never consult the pool


def test_a_full_disk_is_resource_exhausted_with_a_long_retry_delay() -> None:
    with pytest.raises(ResourceExhausted) as raised, database_errors(NO_POOL, ROLE):
        raise pg_errors.DiskFull("could not extend file: No space left on device")
    assert "out of disk space" in str(raised.value) and "nothing was written" in str(raised.value)
    assert raised.value.retry_after_s == DISK_FULL_RETRY_S


def test_a_read_only_standby_is_unavailable_not_internal() -> None:
    with pytest.raises(Unavailable) as raised, database_errors(NO_POOL, ROLE):
        raise pg_errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction")
    assert "read-only" in str(raised.value)
    assert raised.value.reason == ROLE.reason
