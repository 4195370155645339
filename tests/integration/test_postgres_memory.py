"""The embedded servers' shared buffers: a size asked for is what the server runs with, from its
first start; a new size takes effect at the next start (a restart the stack does itself), and
nothing stored is lost to it."""

from __future__ import annotations

from pathlib import Path

import psycopg

from meshsearch_cli.stack import EmbeddedStack, Ports


def running_shared_buffers(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()
        assert row is not None
        return int(row[0])


def test_a_new_data_directory_runs_with_the_size_asked_and_a_changed_size_with_the_new_one(tmp_path: Path) -> None:
    first = EmbeddedStack(tmp_path, Ports.ephemeral(), shared_buffers="160MB")
    try:
        first.start_stores(services=("search",))
        assert running_shared_buffers(first.database_url) == 160 << 20
        with psycopg.connect(first.database_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (note text)")
            conn.execute("INSERT INTO kept VALUES ('still here')")
    finally:
        first.stop()
    second = EmbeddedStack(tmp_path, Ports.ephemeral(), shared_buffers="192MB")
    try:
        second.start_stores(services=("search",))
        assert running_shared_buffers(second.database_url) == 192 << 20
        with psycopg.connect(second.database_url) as conn:
            assert conn.execute("SELECT note FROM kept").fetchall() == [("still here",)]
    finally:
        second.stop()
