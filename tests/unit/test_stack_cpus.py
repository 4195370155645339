"""MESHSEARCH_STACK_EMBEDDER_CPUS: the embedded stack's embedder on CPUs of its own, the rest
of the stack on the others; a list that leaves nothing for the rest is refused."""

from __future__ import annotations

import os

import pytest

from meshsearch_cli.stack import EMBEDDER_CPUS_VARIABLE, cpu_list, cpus_from_env, embedder_apart


def test_cpu_lists_read_as_taskset_writes_them() -> None:
    assert cpu_list("0") == {0}
    assert cpu_list("0,2") == {0, 2}
    assert cpu_list("1-3, 6") == {1, 2, 3, 6}
    with pytest.raises(ValueError, match="not a CPU list"):
        cpu_list("first")


def test_the_embedder_gets_its_cpus_and_every_other_process_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    split = embedder_apart(frozenset({2, 3}))
    assert split["embedder"] == {2, 3}
    assert {name: cpus for name, cpus in split.items() if name != "embedder"} == {
        name: {0, 1} for name in ("api", "search", "worker", "postgres", "redis")
    }


@pytest.mark.parametrize("cpus", [{0, 1, 2, 3}, {4}, {3, 4}])
def test_a_split_that_leaves_nothing_or_names_absent_cpus_is_refused(
    monkeypatch: pytest.MonkeyPatch, cpus: set[int]
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    with pytest.raises(ValueError, match="must be some, not all"):
        embedder_apart(frozenset(cpus))


def test_unset_means_every_process_shares_every_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EMBEDDER_CPUS_VARIABLE, raising=False)
    assert cpus_from_env() == {}
    monkeypatch.setenv(EMBEDDER_CPUS_VARIABLE, "0")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert cpus_from_env()["embedder"] == {0}
