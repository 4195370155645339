"""The /proc readings benchmarks use to say where a request's CPU and memory go."""

from __future__ import annotations

import os
import time

from meshsearch_harness.processes import cpu_between, cpu_seconds, pss_bytes


def test_cpu_time_grows_with_work_and_a_gone_process_reads_zero() -> None:
    before = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.2
    assert cpu_seconds(2**22 + 1) == 0.0  # above Linux's pid_max: no such process


def test_a_process_born_between_two_readings_counts_whole_and_one_gone_is_not_negative() -> None:
    before = {1: 5.0, 2: 1.0}
    after = {1: 5.5, 3: 0.25}  # 2 ended (its time went to its parent's children), 3 started
    assert cpu_between(before, after) == 0.75


def test_memory_of_a_live_process_is_counted_and_of_a_gone_one_is_not() -> None:
    own = pss_bytes([os.getpid()])
    assert own > 1_000_000  # a Python interpreter with pytest loaded
    assert pss_bytes([os.getpid(), 2**22 + 1]) >= own * 0.9
