"""Requests for the client's shortcuts, built in one place for the sync and async clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from meshsearch.api.v1 import api_pb2 as pb

# SearchRequest.top_k 0: as many results as the server's default (its one source is the api's
# MESHSEARCH_API_DEFAULT_TOP_K), so no client keeps a default of its own.
SERVER_DEFAULT_TOP_K = 0


def create_collection(collection: str | pb.Collection) -> pb.CreateCollectionRequest:
    """A collection by name with the server's defaults, or fully described."""
    described = pb.Collection(name=collection) if isinstance(collection, str) else collection
    return pb.CreateCollectionRequest(collection=described)


def index(collection: str, documents: Mapping[str, str] | Iterable[pb.Document]) -> pb.IndexDocumentsRequest:
    """`documents` as {id: text}, or as Document messages (with metadata)."""
    if isinstance(documents, Mapping):
        listed = [pb.Document(id=id_, text=text) for id_, text in documents.items()]
    else:
        listed = list(documents)
    return pb.IndexDocumentsRequest(collection=collection, documents=listed)


def search(
    collection: str,
    query: str,
    top_k: int,
    mode: pb.SearchMode,
    search_filter: pb.Filter | None,
) -> pb.SearchRequest:
    return pb.SearchRequest(collection=collection, query=query, top_k=top_k, mode=mode, filter=search_filter)


def get(collection: str, ids: Iterable[str]) -> pb.GetDocumentsRequest:
    return pb.GetDocumentsRequest(collection=collection, ids=list(ids))
