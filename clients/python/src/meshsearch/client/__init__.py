"""The Python client of meshsearch's public API (`meshsearch.api.v1`).

    from meshsearch.client import Client, Connection

    with Client(Connection("api.internal:50051", api_key="msk_...")) as api:
        api.create_collection("papers")
        api.index("papers", {"p1": "Aspirin lowers the risk of heart attack."})
        for hit in api.query("papers", "does aspirin help the heart?").hits:
            print(hit.score, hit.document.id)

`AsyncClient` is the same for asyncio, and uploads durable ingest jobs (`upload`), resuming
by itself after a broken stream. Both send the key as `authorization: Bearer ...`,
give unary calls a default deadline (30 s), and retry within it: refusals that carry a
google.rpc.RetryInfo (rate limits, overload) after the delay the server asks, and UNAVAILABLE
for the methods the contract marks idempotent, with jittered backoff. `error_details(error)`
decodes the google.rpc details of a failure. `Connection.from_env()` reads MESHSEARCH_TARGET,
MESHSEARCH_API_KEY and MESHSEARCH_TLS_*, as the CLI does.

Its own distribution (`clients/python`, `meshsearch-client`), beside the Node.js client: it
imports the generated stubs (`meshsearch.api.v1`) and the pure parts of `meshsearch_common`
(the error table, TLS settings, limits, backoff, the contracts' options), never the
service-to-service layer (tests/unit/test_packaging.py checks).
"""

from meshsearch.client.clients import AsyncClient, Client
from meshsearch.client.connection import Connection
from meshsearch.client.retries import NO_RETRIES, RetryPolicy
from meshsearch_common.errors import error_details

__all__ = ["NO_RETRIES", "AsyncClient", "Client", "Connection", "RetryPolicy", "error_details"]
