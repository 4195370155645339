from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from meshsearch_cli.stack import EmbeddedStack
from tests.e2e.clients import ApiClient


@pytest.fixture
async def api(stack: EmbeddedStack) -> AsyncIterator[ApiClient]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.api}") as channel:
        yield ApiClient(channel)
