"""The /proc readings benchmarks use to say where a request's CPU and memory go."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from meshsearch_harness.processes import cpu_between, cpu_seconds, pin, pss_bytes

# A child with a second thread already running; after a line on stdin, it reports the CPUs a
# thread it starts then may use.
_THREADED_CHILD = """
import os, sys, threading, time
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
sys.stdin.readline()
seen = []
later = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
later.start()
later.join()
print(seen[0], flush=True)
"""


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


def test_pinning_moves_every_running_thread_and_threads_started_later_inherit_it() -> None:
    cpus = frozenset({max(os.sched_getaffinity(0))})  # one CPU: not what the child started with
    with subprocess.Popen(
        [sys.executable, "-c", _THREADED_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        try:
            assert child.stdout.readline().strip() == "ready"
            threads = [int(tid) for tid in os.listdir(f"/proc/{child.pid}/task")]
            assert len(threads) >= 2
            pin([child.pid, 2**22 + 1], cpus)  # a gone process is passed over
            assert all(os.sched_getaffinity(tid) == cpus for tid in threads)
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == str(sorted(cpus))
        finally:
            child.kill()
