"""`meshsearch collections list|show|create|delete`."""

from __future__ import annotations

import typer
from rich.table import Table

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch_cli.console import TargetOption, connect, every_page, fail, out, run_async

app = typer.Typer(help="Create, list, describe and delete collections.", no_args_is_help=True)
METRICS = {"cosine": pb.METRIC_COSINE, "dot": pb.METRIC_DOT, "l2": pb.METRIC_L2}


def _table(collections: list[pb.Collection]) -> Table:
    table = Table("name", "documents", "metric", "model", "numerics", "created")
    for c in collections:
        table.add_row(
            c.name,
            f"{c.document_count:,}",
            pb.Metric.Name(c.metric).removeprefix("METRIC_").lower(),
            c.model.id,
            c.model.numerics,
            c.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M") if c.HasField("create_time") else "",
        )
    return table


@app.command("list")
@run_async
async def list_(target: str = TargetOption) -> None:
    """List every collection."""
    async with connect(target) as api:
        stub = api.collections
        found = await every_page(
            lambda token: stub.ListCollections(pb.ListCollectionsRequest(page_token=token), timeout=30),
            lambda page: page.collections,
        )
    out.print(_table(found) if found else "no collections")


@app.command()
@run_async
async def show(name: str = typer.Argument(..., help="Collection name."), target: str = TargetOption) -> None:
    """Describe one collection."""
    async with connect(target) as api:
        answer = await api.collections.GetCollection(pb.GetCollectionRequest(name=name), timeout=30)
    out.print(_table([answer.collection]))


@app.command()
@run_async
async def create(
    name: str = typer.Argument(..., help="Collection name: a-z, 0-9 and _, starting with a letter."),
    metric: str = typer.Option("cosine", help="cosine, dot or l2."),
    shards: int = typer.Option(
        0, min=0, max=64, help="Spread the documents over this many PostgreSQL shard servers (docs/scaling.md)."
    ),
    target: str = TargetOption,
) -> None:
    """Create an empty collection bound to the server's embedding model."""
    if metric not in METRICS:
        raise fail(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}", 2)
    async with connect(target) as api:
        collection = pb.Collection(name=name, metric=METRICS[metric], shards=shards)
        answer = await api.collections.CreateCollection(pb.CreateCollectionRequest(collection=collection), timeout=30)
    out.print(_table([answer.collection]))


@app.command()
@run_async
async def delete(
    name: str = typer.Argument(..., help="Collection name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    target: str = TargetOption,
) -> None:
    """Delete a collection and every document in it."""
    if not yes and not typer.confirm(f"delete collection {name!r} and all its documents?"):
        raise typer.Exit(1)
    async with connect(target) as api:
        await api.collections.DeleteCollection(pb.DeleteCollectionRequest(name=name), timeout=60)
    out.print(f"deleted {name}")
