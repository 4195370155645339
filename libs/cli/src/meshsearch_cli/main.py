"""The `meshsearch` command.

meshsearch serve api|embedder|search   run one service in this process
meshsearch up                          embedded PostgreSQL + Redis + all three services, supervised
meshsearch demo                        `up`, index a real corpus, answer queries, stop
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from pathlib import Path

SERVICE_MODULES = {
    "api": "meshsearch_api.app",
    "embedder": "meshsearch_embedder.app",
    "search": "meshsearch_search.app",
}


def _serve(name: str) -> None:
    """The same as `python -m meshsearch_<name>`, which is what images and the stack run."""
    from meshsearch_common.server import run

    run(importlib.import_module(SERVICE_MODULES[name]).create_app())


def _data_dir() -> Path:
    return Path(os.environ.get("MESHSEARCH_DATA_DIR", ".meshsearch")).resolve()


def _up() -> int:
    from meshsearch_cli.stack import EmbeddedStack, Ports
    from meshsearch_cli.supervisor import GaveUp, Supervisor

    stack = EmbeddedStack(_data_dir(), Ports.from_env())
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(f"starting embedded PostgreSQL, Redis and 3 services (data and logs in {stack.data_dir}) ...", flush=True)
    try:
        stack.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"meshsearch up failed: {exc}", file=sys.stderr)
        return 1
    ports = stack.ports
    print(
        f"meshsearch is up:\n"
        f"  api       127.0.0.1:{ports.api}   (metrics :{ports.api_metrics})\n"
        f"  embedder  127.0.0.1:{ports.embedder}   (metrics :{ports.embedder_metrics})\n"
        f"  search    127.0.0.1:{ports.search}   (metrics :{ports.search_metrics})\n"
        f"  postgres  {stack.database_url}\n"
        f"  redis     {stack.redis_url}\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    supervisor = Supervisor(stack, notify=lambda message: print(message, file=sys.stderr, flush=True))
    exit_code = 0
    try:
        while not stopping:
            try:
                supervisor.check()
            except GaveUp:
                exit_code = 1
                break
            time.sleep(0.25)
    finally:
        print("stopping ...", flush=True)
        stack.stop()
        print("stopped", flush=True)
    return exit_code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="meshsearch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one service in this process")
    serve.add_argument("service", choices=sorted(SERVICE_MODULES))
    commands.add_parser("up", help="run the embedded default stack until Ctrl-C")
    demo = commands.add_parser("demo", help="index the standard library's docstrings and search them")
    demo.add_argument("--limit", type=int, default=3000, help="most documents to index")
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve(args.service)
    elif args.command == "up":
        sys.exit(_up())
    else:
        from meshsearch_cli.demo import run_demo

        sys.exit(run_demo(_data_dir(), args.limit))
