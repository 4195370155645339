"""How many bytes one request message of each public method may have, derived from the limits a
valid request obeys (documents per request, text and metadata per document, searches per
batch) and never over `max_request_bytes`, so that no caller, with a key or without, can make
the api receive or parse more. (A batch of many long documents must be split by bytes as well
as by count, as the clients' uploads do: Pinecone's 2 MB per upsert is the same idea.)

A message over its method's limit is refused INVALID_ARGUMENT (MESSAGE_TOO_LARGE) before it
is parsed (`meshsearch_common.limits`); one over the largest limit is refused by gRPC itself
while it is read.
"""

from __future__ import annotations

from meshsearch_api.settings import ApiSettings
from meshsearch_common.identifiers import MAX_DOCUMENT_ID_CHARS
from meshsearch_common.limits import RequestLimits

API = "/meshsearch.api.v1."
# Room for the fields around the large ones (names, ids, options, protobuf framing).
ENVELOPE_BYTES = 64 * 1024
# A document id in UTF-8 (up to 4 bytes a character) and a filter or query's small fields.
DOCUMENT_ID_BYTES = 4 * MAX_DOCUMENT_ID_CHARS


def api_request_limits(settings: ApiSettings) -> RequestLimits:
    document = settings.max_text_bytes + settings.max_metadata_bytes + DOCUMENT_ID_BYTES
    documents = settings.max_documents_per_request * document + ENVELOPE_BYTES
    ids = settings.max_documents_per_request * DOCUMENT_ID_BYTES + ENVELOPE_BYTES
    search = settings.max_text_bytes + settings.max_metadata_bytes + ENVELOPE_BYTES  # query + filter
    per_method = {
        f"{API}DocumentService/IndexDocuments": documents,
        f"{API}IngestService/StartIngest": documents,
        f"{API}IngestService/EstimateIngest": documents,
        f"{API}SearchService/SearchBatch": settings.max_searches_per_batch * search,
    }
    cap = settings.max_request_bytes
    return RequestLimits(
        default_bytes=min(max(search, ids), cap),
        per_method={method: min(limit, cap) for method, limit in per_method.items()},
    )
