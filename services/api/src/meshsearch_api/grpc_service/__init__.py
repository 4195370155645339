"""gRPC adapters of the public api, one servicer per file: each translates meshsearch.api.v1
messages (through `conversions.public`) and calls the core (`core.ApiCore`), which does the work.
The ingest and key services have theirs in `ingest.grpc_service` and `auth.grpc_service`."""

from meshsearch_api.grpc_service.collections import CollectionServicer
from meshsearch_api.grpc_service.documents import DocumentServicer
from meshsearch_api.grpc_service.search import SearchServicer

__all__ = ["CollectionServicer", "DocumentServicer", "SearchServicer"]
