"""gRPC adapter of the public api: translates meshsearch.api.v1 messages; the core does the work."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import json_format

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_api import search_client
from meshsearch_api.catalog import Catalog
from meshsearch_api.documents import Documents
from meshsearch_api.domain import CollectionInfo, Document
from meshsearch_common.errors import enum_member, finite
from meshsearch_common.readiness import Readiness

_METRIC_IN = {pb.METRIC_UNSPECIFIED: "cosine", pb.METRIC_COSINE: "cosine", pb.METRIC_DOT: "dot", pb.METRIC_L2: "l2"}
_METRIC_OUT = {"cosine": pb.METRIC_COSINE, "dot": pb.METRIC_DOT, "l2": pb.METRIC_L2}


@dataclass(frozen=True)
class Core:
    catalog: Catalog
    documents: Documents


def _collection_out(info: CollectionInfo) -> pb.Collection:
    message = pb.Collection(
        name=info.name,
        metric=_METRIC_OUT[info.metric],
        model=pb.EmbeddingModel(id=info.model.id, revision=info.model.revision, dimension=info.model.dimension),
        document_count=info.document_count,
    )
    if info.create_time is not None:
        message.create_time.FromDatetime(info.create_time)
    return message


def _document_in(message: pb.Document) -> Document:
    metadata = json_format.MessageToDict(message.metadata) if message.HasField("metadata") else {}
    return Document(message.id, message.text, metadata)


def _document_out(document: Document) -> pb.Document:
    return pb.Document(id=document.id, text=document.text, metadata=search_client.struct(document.metadata))


class CollectionServicer(pb_grpc.CollectionServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def CreateCollection(
        self, request: pb.CreateCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateCollectionResponse:
        metric = enum_member(_METRIC_IN, request.collection.metric, "collection.metric")
        info = await self._core.get().catalog.create(request.collection.name, metric)
        return pb.CreateCollectionResponse(collection=_collection_out(info))

    async def GetCollection(
        self, request: pb.GetCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetCollectionResponse:
        return pb.GetCollectionResponse(collection=_collection_out(await self._core.get().catalog.get(request.name)))

    async def ListCollections(
        self, request: pb.ListCollectionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListCollectionsResponse:
        infos = await self._core.get().catalog.list()
        return pb.ListCollectionsResponse(collections=[_collection_out(info) for info in infos])

    async def DeleteCollection(
        self, request: pb.DeleteCollectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteCollectionResponse:
        await self._core.get().catalog.delete(request.name)
        return pb.DeleteCollectionResponse()


class DocumentServicer(pb_grpc.DocumentServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def IndexDocuments(
        self, request: pb.IndexDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.IndexDocumentsResponse:
        documents = [_document_in(message) for message in request.documents]
        outcome = await self._core.get().documents.index(request.collection, documents)
        return pb.IndexDocumentsResponse(
            indexed_count=outcome.indexed_count,
            errors=[
                pb.DocumentError(index=e.index, id=e.id, code=e.code.value[0], message=e.message)
                for e in outcome.errors
            ],
            load=pb.LoadReport(embedder_queue_seconds=outcome.embedder_queue_s),
        )

    async def GetDocuments(
        self, request: pb.GetDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetDocumentsResponse:
        documents, missing = await self._core.get().documents.get(request.collection, list(request.ids))
        return pb.GetDocumentsResponse(documents=[_document_out(d) for d in documents], missing_ids=missing)

    async def DeleteDocuments(
        self, request: pb.DeleteDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentsResponse:
        count = await self._core.get().documents.delete(request.collection, list(request.ids))
        return pb.DeleteDocumentsResponse(deleted_count=count)


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, core: Readiness[Core]) -> None:
        self._core = core

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        threshold = finite(request.score_threshold, "score_threshold") if request.HasField("score_threshold") else None
        hits = await self._core.get().documents.search(request.collection, request.query, request.top_k, threshold)
        return pb.SearchResponse(hits=[pb.SearchHit(document=_document_out(h.document), score=h.score) for h in hits])
