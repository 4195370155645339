"""`meshsearch search "..."`: a ranked, readable table of answers."""

from __future__ import annotations

import typer
from rich.table import Table

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.client.requests import SERVER_DEFAULT_TOP_K
from meshsearch_cli.console import TargetOption, connect, fail, out, run_async

MODES = {"vector": pb.SEARCH_MODE_VECTOR, "keyword": pb.SEARCH_MODE_KEYWORD, "hybrid": pb.SEARCH_MODE_HYBRID}
SNIPPET_CHARS = 160


def snippet(hit: pb.SearchHit) -> str:
    """The best chunk's text when the hit names one, else the start of the document."""
    text = hit.document.text
    if hit.HasField("chunk") and hit.chunk.end > hit.chunk.start:
        text = text[hit.chunk.start : hit.chunk.end]
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"


@run_async
async def search(
    query: str = typer.Argument(..., help="What to look for, in natural language."),
    collection: str = typer.Option(..., "--collection", "-c", help="Collection to search."),
    top_k: int = typer.Option(
        SERVER_DEFAULT_TOP_K, "--top-k", "-k", min=0, help="How many results; 0 takes the server's default (10)."
    ),
    mode: str = typer.Option("vector", help="vector (by meaning), keyword (BM25) or hybrid (both)."),
    target: str = TargetOption,
) -> None:
    """Search a collection and print the best matches, best first."""
    if mode not in MODES:
        raise fail(f"unknown mode {mode!r}; use one of {', '.join(MODES)}", 2)
    async with connect(target) as api:
        answer = await api.search.Search(
            pb.SearchRequest(collection=collection, query=query, top_k=top_k, mode=MODES[mode]), timeout=30
        )
    if answer.degraded:
        out.print(f"[yellow]degraded:[/] {answer.degraded_reason}")
    if not answer.hits:
        out.print("no results")
        return
    table = Table("#", "score", "id", "text", title=f"{query!r} in {collection}", show_lines=False)
    for rank, hit in enumerate(answer.hits, start=1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.document.id, snippet(hit))
    out.print(table)
