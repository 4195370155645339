"""`AsyncClient` and `Client`: one channel to the api with the key, request ids, deadlines and
retries of a `CallPolicy` on every call, typed stubs for every service of
`meshsearch.api.v1`, and shortcuts for the calls most programs make.

Every method of the contract is reachable through the stubs (`client.collections`,
`.documents`, `.search`, `.ingest`, `.keys`); the shortcuts only build requests."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Self

import grpc

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.client import aio_interceptors, requests
from meshsearch.client.connection import Connection
from meshsearch.client.policy import CallPolicy
from meshsearch.client.requests import SERVER_DEFAULT_TOP_K
from meshsearch.client.retries import RetryPolicy
from meshsearch.client.sync_interceptors import PolicyInterceptor
from meshsearch.client.uploads import UploadResult, upload


def _policy(connection: Connection, timeout_s: float | None, retry: RetryPolicy | None) -> CallPolicy:
    return CallPolicy(api_key=connection.api_key, timeout_s=timeout_s, retry=retry or RetryPolicy())


class _Stubs:
    """Typed stubs for each service of the public contract, on one channel."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel) -> None:
        self.collections = pb_grpc.CollectionServiceStub(channel)
        self.documents = pb_grpc.DocumentServiceStub(channel)
        self.search = pb_grpc.SearchServiceStub(channel)
        self.ingest = pb_grpc.IngestServiceStub(channel)
        self.keys = pb_grpc.KeyServiceStub(channel)


class AsyncClient(_Stubs):
    """For asyncio programs: `async with AsyncClient(Connection.from_env()) as api: ...`.

    `timeout_s` is the default deadline of unary calls, retries included (None: no deadline);
    `retry` how refusals and outages are retried (`NO_RETRIES` to see every failure)."""

    def __init__(
        self, connection: Connection | None = None, *, timeout_s: float | None = 30.0, retry: RetryPolicy | None = None
    ) -> None:
        self.connection = connection or Connection.from_env()
        interceptors = aio_interceptors.interceptors(_policy(self.connection, timeout_s, retry))
        credentials = self.connection.credentials()
        options = self.connection.options()
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(self.connection.target, options, interceptors=interceptors)
        else:
            self.channel = grpc.aio.secure_channel(
                self.connection.target, credentials, options, interceptors=interceptors
            )
        super().__init__(self.channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def create_collection(self, collection: str | pb.Collection) -> pb.Collection:
        answer: pb.CreateCollectionResponse = await self.collections.CreateCollection(
            requests.create_collection(collection)
        )
        return answer.collection

    async def index(
        self, collection: str, documents: Mapping[str, str] | Iterable[pb.Document]
    ) -> pb.IndexDocumentsResponse:
        result: pb.IndexDocumentsResponse = await self.documents.IndexDocuments(requests.index(collection, documents))
        return result

    async def query(
        self,
        collection: str,
        query: str,
        top_k: int = SERVER_DEFAULT_TOP_K,
        mode: pb.SearchMode = pb.SEARCH_MODE_VECTOR,
        search_filter: pb.Filter | None = None,
    ) -> pb.SearchResponse:
        result: pb.SearchResponse = await self.search.Search(
            requests.search(collection, query, top_k, mode, search_filter)
        )
        return result

    async def get(self, collection: str, ids: Iterable[str]) -> list[pb.Document]:
        answer = await self.documents.GetDocuments(requests.get(collection, ids))
        return list(answer.documents)

    async def upload(
        self,
        documents: Iterable[pb.Document],
        collection: str = "",
        priority: pb.JobPriority = pb.JOB_PRIORITY_NORMAL,
        job_id: str = "",
        on_acknowledged: Callable[[str, int], None] = lambda job_id, count: None,
    ) -> UploadResult:
        """Upload `documents` to a new durable ingest job on `collection` (or continue job
        `job_id`), resuming by itself after a broken stream; see `uploads`. Follow the job with
        `self.ingest.WatchJob`."""
        return await upload(
            self.channel,
            documents,
            collection=collection,
            priority=priority,
            job_id=job_id,
            on_acknowledged=on_acknowledged,
        )


class Client(_Stubs):
    """The blocking twin of `AsyncClient`, for scripts and notebooks: same policy, same
    shortcuts, plain method calls."""

    def __init__(
        self, connection: Connection | None = None, *, timeout_s: float | None = 30.0, retry: RetryPolicy | None = None
    ) -> None:
        self.connection = connection or Connection.from_env()
        credentials = self.connection.credentials()
        options = self.connection.options()
        if credentials is None:
            raw = grpc.insecure_channel(self.connection.target, options)
        else:
            raw = grpc.secure_channel(self.connection.target, credentials, options)
        self._raw_channel = raw
        self.channel = grpc.intercept_channel(raw, PolicyInterceptor(_policy(self.connection, timeout_s, retry)))
        super().__init__(self.channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._raw_channel.close()

    def create_collection(self, collection: str | pb.Collection) -> pb.Collection:
        return self.collections.CreateCollection(requests.create_collection(collection)).collection  # type: ignore[no-any-return]

    def index(self, collection: str, documents: Mapping[str, str] | Iterable[pb.Document]) -> pb.IndexDocumentsResponse:
        return self.documents.IndexDocuments(requests.index(collection, documents))  # type: ignore[no-any-return]

    def query(
        self,
        collection: str,
        query: str,
        top_k: int = SERVER_DEFAULT_TOP_K,
        mode: pb.SearchMode = pb.SEARCH_MODE_VECTOR,
        search_filter: pb.Filter | None = None,
    ) -> pb.SearchResponse:
        return self.search.Search(requests.search(collection, query, top_k, mode, search_filter))  # type: ignore[no-any-return]

    def get(self, collection: str, ids: Iterable[str]) -> list[pb.Document]:
        return list(self.documents.GetDocuments(requests.get(collection, ids)).documents)
