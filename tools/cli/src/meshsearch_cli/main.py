"""The `meshsearch` command.

Operators:  serve api|embedder|search|worker, up, demo
Clients:    ingest, jobs, search, collections (talk to the api at --target / MESHSEARCH_TARGET)
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import time
from enum import StrEnum
from pathlib import Path

import typer

from meshsearch_cli.commands import collections, jobs, keys
from meshsearch_cli.commands.ingest import ingest
from meshsearch_cli.commands.search import search

app = typer.Typer(
    name="meshsearch",
    help="meshsearch: semantic search as a gRPC service mesh. Run it (serve, up, demo) and use it "
    "(ingest, jobs, search, collections).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(collections.app, name="collections")
app.add_typer(jobs.app, name="jobs")
app.add_typer(keys.app, name="keys")
app.command(help=ingest.__doc__)(ingest)
app.command(help=search.__doc__)(search)


class Service(StrEnum):
    api = "api"
    embedder = "embedder"
    search = "search"
    worker = "worker"


SERVICE_MODULES = {
    "api": "meshsearch_api.app",
    "embedder": "meshsearch_embedder.app",
    "search": "meshsearch_search.app",
    "worker": "meshsearch_api.ingest.worker",
}


@app.command()
def serve(service: Service = typer.Argument(..., help="Which service this process runs.")) -> None:
    """Run one service in this process (what its image runs); configured by environment."""
    from meshsearch_common.server import run

    run(importlib.import_module(SERVICE_MODULES[service.value]).create_app())


def _data_dir() -> Path:
    return Path(os.environ.get("MESHSEARCH_DATA_DIR", ".meshsearch")).resolve()


@app.command()
def up(
    shards: int = typer.Option(
        0,
        "--shards",
        min=0,
        max=64,
        help="Also run this many embedded PostgreSQL shard servers, for collections created with "
        "shards > 1 (docs/scaling.md).",
    ),
) -> None:
    """Run the embedded default stack (PostgreSQL, Redis, the services, a worker) until Ctrl-C."""
    from meshsearch_cli.stack import EmbeddedStack, Ports, cpus_from_env
    from meshsearch_cli.supervisor import GaveUp, Supervisor

    try:
        stack = EmbeddedStack(_data_dir(), Ports.from_env(), cpus=cpus_from_env(), shards=shards)
    except ValueError as exc:
        print(f"meshsearch up: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    stopping = False

    def request_stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    print(
        f"starting embedded PostgreSQL, Redis, 3 services and a worker (data and logs in {stack.data_dir}) ...",
        flush=True,
    )
    try:
        stack.start()
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"meshsearch up failed: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    ports = stack.ports
    print(
        f"meshsearch is up:\n"
        f"  api       127.0.0.1:{ports.api}   (metrics :{ports.api_metrics})\n"
        f"  embedder  127.0.0.1:{ports.embedder}   (metrics :{ports.embedder_metrics})\n"
        f"  search    127.0.0.1:{ports.search}   (metrics :{ports.search_metrics})\n"
        f"  worker    127.0.0.1:{ports.worker}   (metrics :{ports.worker_metrics})\n"
        f"  postgres  a socket in {stack.data_dir / 'pgdata'}, a role and a database per service "
        f"(their passwords: {stack.data_dir / 'postgres-passwords.json'})\n"
        f"  redis     127.0.0.1:{ports.redis} (cache), :{ports.state_redis} (limits and quotas)   "
        f"(their password: {stack.data_dir / 'redis' / 'redis.conf'})\n"
        + "".join(
            f"  shard {index}   a socket in {stack.data_dir / f'pgdata-shard-{index}'}\n" for index in range(shards)
        )
        + "The embedder and the search service serve only this stack's api and worker (a caller token).\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    if not stack.auth_enabled:
        print(
            "WARNING: auth is off: any local caller acts as tenant 'default' with every role and no rate limit. "
            "Set MESHSEARCH_API_AUTH_ENABLED=true (and MESHSEARCH_API_BOOTSTRAP_KEY) to require API keys.",
            file=sys.stderr,
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
    raise typer.Exit(exit_code)


@app.command()
def demo(limit: int = typer.Option(3000, help="Most documents to index.")) -> None:
    """Start the embedded stack, index the standard library's docstrings, answer queries, stop."""
    from meshsearch_cli.demo import run_demo

    raise typer.Exit(run_demo(_data_dir(), limit))


def main() -> None:
    app()
