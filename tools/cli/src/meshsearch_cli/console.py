"""What every client command shares: where the api is, one channel to it, and how failures
become messages and exit codes.

Exit codes (sysexits.h, which shell scripts can test):
  0   done
  1   done, but not everything succeeded (a job with dead letters, a failed job)
  2   bad command line (from click)
  65  the server refused the input (INVALID_ARGUMENT, FAILED_PRECONDITION, ...)
  66  an input file does not exist
  69  the service is unavailable (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED)
  70  the server failed (INTERNAL, UNKNOWN)
  77  not allowed (UNAUTHENTICATED, PERMISSION_DENIED)
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import grpc
import typer
from rich.console import Console

from meshsearch.client import AsyncClient, Connection
from meshsearch.client.connection import DEFAULT_TARGET, TARGET_VARIABLE

P = ParamSpec("P")
T = TypeVar("T")

PARTIAL, DATA_ERROR, NO_INPUT, UNAVAILABLE, SOFTWARE, NO_PERMISSION, INTERRUPTED = 1, 65, 66, 69, 70, 77, 130

EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: DATA_ERROR,
    grpc.StatusCode.FAILED_PRECONDITION: DATA_ERROR,
    grpc.StatusCode.OUT_OF_RANGE: DATA_ERROR,
    grpc.StatusCode.ALREADY_EXISTS: DATA_ERROR,
    grpc.StatusCode.NOT_FOUND: DATA_ERROR,
    grpc.StatusCode.UNAVAILABLE: UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED: UNAVAILABLE,
    grpc.StatusCode.UNAUTHENTICATED: NO_PERMISSION,
    grpc.StatusCode.PERMISSION_DENIED: NO_PERMISSION,
}

out = Console()
err = Console(stderr=True)

TargetOption = typer.Option(
    DEFAULT_TARGET, "--target", envvar=TARGET_VARIABLE, help="The api's gRPC address.", show_default=True
)


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def run_async(command: Callable[P, Awaitable[T]]) -> Callable[P, T]:
    """Run an async command; a gRPC failure or Ctrl-C ends it with a message and its exit code,
    never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return asyncio.run(command(*args, **kwargs))  # type: ignore[arg-type]
        except grpc.aio.AioRpcError as error:
            raise fail(f"{error.code().name}: {error.details()}", EXIT_CODES.get(error.code(), SOFTWARE)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", INTERRUPTED) from None

    return wrapper


def connect(target: str) -> AsyncClient:
    """A client of the api at `target` (or MESHSEARCH_TARGET), with the API key and TLS
    settings of the environment (MESHSEARCH_API_KEY, MESHSEARCH_TLS_*; see
    `meshsearch.client.Connection.from_env`)."""
    return AsyncClient(Connection.from_env(target=target))


async def every_page(fetch: Callable[[str], Awaitable[Any]], items: Callable[[Any], Sequence[T]]) -> list[T]:
    """Everything a paged List call returns: `fetch(page_token)` until next_page_token is empty."""
    found: list[T] = []
    token = ""
    while True:
        page = await fetch(token)
        found.extend(items(page))
        token = page.next_page_token
        if not token:
            return found
