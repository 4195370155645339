"""`meshsearch demo` fails with one clear message, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from meshsearch_cli.demo import responsible_service
from meshsearch_cli.stack import SERVICES, Ports


def test_a_service_that_cannot_start_is_named_with_its_log_and_no_traceback(tmp_path: Path) -> None:
    ports = Ports.ephemeral()
    env = {
        **os.environ,
        "MESHSEARCH_DATA_DIR": str(tmp_path),
        "MESHSEARCH_EMBEDDER_MODEL_PATH": str(tmp_path / "no-such-model"),  # the embedder cannot start
        **{f"MESHSEARCH_{name.upper()}_PORT": str(getattr(ports, name)) for name in SERVICES},
        **{f"MESHSEARCH_{name.upper()}_METRICS_PORT": str(getattr(ports, f"{name}_metrics")) for name in SERVICES},
    }
    demo = subprocess.run(
        [sys.executable, "-m", "meshsearch_cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = demo.stdout + demo.stderr
    assert demo.returncode == 1, output
    assert "Traceback" not in output, output
    assert "the embedder service did not become ready" in output
    assert str(tmp_path / "logs" / "embedder.log") in output.replace("\n", "")


def test_an_api_error_is_pinned_on_the_upstream_it_names() -> None:
    assert responsible_service("embedder: overloaded: the embedder's queue needs about 9.1s") == "embedder"
    assert responsible_service("search did not answer within the deadline: Deadline Exceeded") == "search"
    assert responsible_service("failed to connect to all addresses") == "api"
