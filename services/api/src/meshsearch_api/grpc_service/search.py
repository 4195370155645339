"""SearchService: one search, or a batch of them."""

from __future__ import annotations

from typing import Any

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api.conversions import public
from meshsearch_api.core import ApiCore
from meshsearch_common.readiness import Readiness


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, core: Readiness[ApiCore]) -> None:
        self._core = core

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext[Any, Any]) -> pb.SearchResponse:
        result = await self._core.get().searches.search(public.search_query_in(request))
        return public.search_result_out(result)

    async def SearchBatch(
        self, request: pb.SearchBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SearchBatchResponse:
        queries = [public.search_query_in(search) for search in request.searches]
        results = await self._core.get().searches.search_batch(queries)
        return pb.SearchBatchResponse(results=[public.search_result_out(result) for result in results])
