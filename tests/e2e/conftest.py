from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from meshsearch_cli.stack import EmbeddedStack
from meshsearch_harness.secured import SecuredApis, start_secured_apis
from tests.e2e.clients import ApiClient


@pytest.fixture
async def api(stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as channel:
        yield ApiClient(channel)


@pytest.fixture(scope="module")
def secured(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredApis]:
    """Two api replicas with auth on, sharing a Redis, for the tests of one module."""
    yield from start_secured_apis(stack, tmp_path_factory.mktemp("secured"))
