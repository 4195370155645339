"""Embedder replicas behind one target are used evenly (client-side round_robin)."""

from __future__ import annotations

import re
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from meshsearch_cli.stack import EmbeddedStack, Ports
from tests.e2e.clients import ApiClient

EMBED_CALLS = re.compile(
    r'meshsearch_rpc_handled_total\{code="OK",method="/meshsearch.embedder.v1.EmbedderService/Embed"\} (\d+)'
)


def embed_calls(metrics_port: int) -> int:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    match = EMBED_CALLS.search(body)
    return int(float(match.group(1))) if match else 0


@pytest.fixture
def two_replicas_and_an_api(stack: EmbeddedStack, tmp_path: Path) -> Iterator[tuple[EmbeddedStack, EmbeddedStack]]:
    replicas = [
        EmbeddedStack(tmp_path / f"replica{i}", Ports.ephemeral(), database_url=stack.database_url) for i in (1, 2)
    ]
    # One target naming every replica: the static-list equivalent of a DNS name with one
    # A record per replica (a headless Kubernetes Service); the channel balances round_robin.
    target = "ipv4:" + ",".join(f"127.0.0.1:{r.ports.embedder}" for r in replicas)
    front = replicas[0]
    front.extra_env = {"MESHSEARCH_API_EMBEDDER_TARGET": target}
    front.ports = replace(front.ports, search=stack.ports.search)
    front.redis_url = ""  # no cache: every text must reach an embedder
    try:
        for replica in replicas:
            replica.start_service("embedder")
        front.start_service("api")
        for replica in replicas:
            replica.wait_service("embedder")
        front.wait_service("api")
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            replica.stop()


async def test_the_api_spreads_embedding_calls_across_both_replicas(two_replicas_and_an_api) -> None:
    first, second = two_replicas_and_an_api
    before = embed_calls(first.ports.embedder_metrics), embed_calls(second.ports.embedder_metrics)
    name = f"replicas_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{first.ports.api}") as channel:
        api = ApiClient(channel)
        await api.create(name)
        for i in range(40):
            await api.query(name, f"question number {i} {uuid.uuid4().hex}")
    after = embed_calls(first.ports.embedder_metrics), embed_calls(second.ports.embedder_metrics)
    served = (after[0] - before[0], after[1] - before[1])
    assert sum(served) >= 40
    assert min(served) >= 15, f"uneven spread across replicas: {served}"
