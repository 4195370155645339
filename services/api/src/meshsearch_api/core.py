"""The api's core for the public services: plain Python objects that do the work, built by the
app once its upstreams are reachable and handed to the gRPC adapters (`grpc_service`)."""

from __future__ import annotations

from dataclasses import dataclass

from meshsearch_api.catalog import Catalog
from meshsearch_api.documents import Documents
from meshsearch_api.request_keys import RequestKeys
from meshsearch_api.searches import Searches


@dataclass(frozen=True)
class ApiCore:
    catalog: Catalog
    documents: Documents
    searches: Searches
    request_keys: RequestKeys
