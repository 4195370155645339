"""Fixtures of the integration tests that reach the jobs database directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from meshsearch_api.database import open_pool


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    """A pool on a jobs database with the api's schema (the test stack's PostgreSQL, as its
    superuser: a database of the tests' own, apart from the services')."""
    opened = await open_pool(database_url, 4)
    yield opened
    await opened.close()
