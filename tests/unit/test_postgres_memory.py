"""MESHSEARCH_STACK_POSTGRES_SHARED_BUFFERS: each embedded server's shared buffers, by default a
quarter of the machine's memory (or its cgroup's limit) split among the stack's servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsearch_cli.postgres_memory import machine_memory, shared_buffers_for

GIB = 1 << 30


def test_auto_splits_a_quarter_of_the_memory_among_the_servers_and_never_goes_below_postgres_default() -> None:
    assert shared_buffers_for("auto", 1, 24 * GIB) == "6144MB"
    assert shared_buffers_for("auto", 3, 24 * GIB) == "2048MB"
    assert shared_buffers_for("", 5, 24 * GIB) == "1228MB"  # unset reads as auto
    assert shared_buffers_for("auto", 4, 1 * GIB) == "128MB"


@pytest.mark.parametrize("size", ["512MB", "2GB", "131072kB"])
def test_a_size_postgresql_accepts_is_taken_as_it_is(size: str) -> None:
    assert shared_buffers_for(size, 3, 24 * GIB) == size


@pytest.mark.parametrize("size", ["lots", "2 GB", "0MB", "2gb", "-1GB", "2GB; DROP TABLE x"])
def test_anything_else_is_refused_naming_the_variable(size: str) -> None:
    with pytest.raises(ValueError, match="MESHSEARCH_STACK_POSTGRES_SHARED_BUFFERS"):
        shared_buffers_for(size, 1, 24 * GIB)


def test_a_cgroup_memory_limit_below_the_machine_caps_it_and_max_or_absent_does_not(tmp_path: Path) -> None:
    whole = machine_memory(tmp_path)  # no cgroup files under this root
    assert whole > 0
    limit = tmp_path / "sys/fs/cgroup/memory.max"
    limit.parent.mkdir(parents=True)
    limit.write_text("max\n")
    assert machine_memory(tmp_path) == whole
    limit.write_text(f"{2 * GIB}\n")
    assert machine_memory(tmp_path) == min(whole, 2 * GIB)
    v1 = tmp_path / "sys/fs/cgroup/memory/memory.limit_in_bytes"
    v1.parent.mkdir(parents=True)
    v1.write_text(f"{GIB}\n")
    assert machine_memory(tmp_path) == min(whole, GIB)
