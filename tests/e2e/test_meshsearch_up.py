"""`meshsearch up`: the embedded default starts everything and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from meshsearch_common.cli.stack import Ports


def test_up_reports_every_service_and_ctrl_c_leaves_no_process_behind(tmp_path: Path) -> None:
    ports = Ports.ephemeral()
    env = {
        **os.environ,
        "MESHSEARCH_DATA_DIR": str(tmp_path),
        "MESHSEARCH_API_PORT": str(ports.api),
        "MESHSEARCH_EMBEDDER_PORT": str(ports.embedder),
        "MESHSEARCH_SEARCH_PORT": str(ports.search),
        "MESHSEARCH_API_METRICS_PORT": str(ports.api_metrics),
        "MESHSEARCH_EMBEDDER_METRICS_PORT": str(ports.embedder_metrics),
        "MESHSEARCH_SEARCH_METRICS_PORT": str(ports.search_metrics),
    }
    up = subprocess.Popen(
        [sys.executable, "-m", "meshsearch_common.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    deadline = time.monotonic() + 180
    assert up.stdout is not None
    while time.monotonic() < deadline:
        line = up.stdout.readline()
        output.append(line)
        if "Ctrl-C stops everything" in line or up.poll() is not None:
            break
    text = "".join(output)
    assert "meshsearch is up" in text, text
    for port in (ports.api, ports.embedder, ports.search):
        assert f"127.0.0.1:{port}" in text
    descendants = psutil.Process(up.pid).children(recursive=True)
    # The service processes run in their own sessions; find them by their command line too.
    descendants += [p for p in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert len({p.pid for p in descendants}) >= 4  # redis, api, embedder, search (+ postgres)

    up.send_signal(signal.SIGINT)
    assert up.wait(60) == 0
    time.sleep(0.5)
    alive = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert (tmp_path / "pgdata" / "PG_VERSION").exists()  # data kept between runs
