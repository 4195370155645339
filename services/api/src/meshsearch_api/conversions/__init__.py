"""Every translation between the api's plain types and the contracts it speaks, one module per
contract: `public` (meshsearch.api.v1 collections, documents and search, to callers), `jobs`
(meshsearch.api.v1 IngestService) and `search_service` (meshsearch.search.v1, the search
service). Adapters and clients call these; nothing else builds or reads those messages field
by field."""
