"""usable_cpus(): the embedder sizes its inference threads by the CPUs it may run on (affinity
mask, cgroup quota), not by the machine's core count, which a container does not own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshsearch_embedder.cpu import inference_threads, usable_cpus


def cgroup_root(tmp_path: Path, files: dict[str, str]) -> Path:
    """A directory laid out like / with the given cgroup files under sys/fs/cgroup."""
    for relative, text in files.items():
        path = tmp_path / "sys" / "fs" / "cgroup" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.fixture
def eight_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))


@pytest.mark.usefixtures("eight_cpus")
@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({}, 8),
        ({"cpu.max": "max 100000\n"}, 8),
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs of time: two threads, not one
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "1600000 100000\n"}, 8),  # a quota above the mask does not add CPUs
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 8),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3),
        ({"cpu.max": "garbage"}, 8),
    ],
)
def test_the_quota_caps_the_affinity_mask(tmp_path: Path, files: dict[str, str], expected: int) -> None:
    assert usable_cpus(cgroup_root(tmp_path, files)) == expected


def test_a_pinned_process_counts_only_its_cpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    assert usable_cpus(tmp_path) == 1


def test_configured_threads_win_over_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert inference_threads(6) == 6
    assert inference_threads(0) == usable_cpus()
