"""A mixed load on the public api, as many clients at once: searches of every mode (vector,
filtered, hybrid, keyword), gets, small IndexDocuments batches, ingest jobs one after another,
and API keys created and revoked. Every unary call lands in a CallLog; what was acknowledged is
kept, so that a fault test can check afterwards that none of it was lost or stored twice.

Shared by the mixed-load fault test (tests/e2e/test_mesh_chaos.py) and the soak
(tests/e2e/test_soak.py): a soak keeps its collections one size (ids cycle), a fault test writes
new ids all along and checks each of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Value

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.client.connection import Connection
from meshsearch.client.uploads import upload
from tests.e2e.ingest_helpers import content_hash, sentences, wait_job
from tests.load.calls import CallLog, CallRecord, now

SEARCH_DEADLINE_S = 5.0
WRITE_DEADLINE_S = 10.0
SEED = "seed-"  # the documents the filtered searches select
# operation -> its share of a client's calls
MIX = {
    "search_vector": 30,
    "search_filtered": 15,
    "search_hybrid": 15,
    "search_keyword": 10,
    "get": 10,
    "index": 15,
    "key": 5,
}
INDEX_BATCH = 4


@dataclass(frozen=True)
class LoadShape:
    clients: int = 64
    think_s: float = 0.5  # a client's mean pause between calls (exponential)
    # None: every IndexDocuments writes new ids, each checked afterwards; n: ids cycle within n,
    # so that a long run's collection stays one size.
    index_ids: int | None = None
    ingest_documents: int = 300  # per job; jobs follow one another while the load runs
    ingest_new_ids: bool = True  # False: each job writes the same ids again (a soak)
    seed_documents: int = 300


@dataclass
class Written:
    """What the mesh acknowledged: id -> content hash, per collection."""

    indexed: dict[str, str] = field(default_factory=dict)
    ingested: dict[str, str] = field(default_factory=dict)
    jobs: list[str] = field(default_factory=list)
    jobs_failed: list[str] = field(default_factory=list)


class MixedLoad:
    """Run with `async with MixedLoad(...) as load:`; the load runs until the block ends."""

    def __init__(
        self,
        target: str,
        collection: str,
        shape: LoadShape,
        metadata: tuple[tuple[str, str], ...] = (),
        admin_metadata: tuple[tuple[str, str], ...] | None = None,
        tenant: str = "",
    ) -> None:
        self.target = target
        self.collection = collection
        self.ingest_collection = f"{collection}_ingest"
        self.shape = shape
        self.metadata = metadata
        self.admin_metadata = admin_metadata  # None: no key churn (auth off)
        self.tenant = tenant
        self.log = CallLog()
        self.written = Written()
        self._texts = [document.text for document in sentences(4000, salt="q")]
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._channels: list[grpc.aio.Channel] = []
        self._counter = 0
        self.errors: list[BaseException] = []

    async def __aenter__(self) -> MixedLoad:
        setup = self._open_channel()
        self._channels.append(setup)
        collections = pb_grpc.CollectionServiceStub(setup)
        for name in (self.collection, self.ingest_collection):
            with contextlib.suppress(grpc.aio.AioRpcError):  # ALREADY_EXISTS on a second load
                await collections.CreateCollection(
                    pb.CreateCollectionRequest(collection=pb.Collection(name=name)),
                    metadata=self.metadata,
                    timeout=30,
                )
        seed = sentences(self.shape.seed_documents, salt=SEED)
        documents = pb_grpc.DocumentServiceStub(setup)
        for start in range(0, len(seed), 100):
            await documents.IndexDocuments(
                pb.IndexDocumentsRequest(collection=self.collection, documents=seed[start : start + 100]),
                metadata=self.metadata,
                timeout=120,
            )
        # A few channels, as a few client processes would have; each carries many clients.
        for _ in range(4):
            self._channels.append(self._open_channel())
        for client in range(self.shape.clients):
            self._tasks.append(asyncio.create_task(self._client(client)))
        self._tasks.append(asyncio.create_task(self._ingest_jobs()))
        return self

    def _open_channel(self) -> grpc.aio.Channel:
        """A channel as the public client opens one (keepalive: a silent link is dropped)."""
        return grpc.aio.insecure_channel(self.target, options=Connection(target=self.target).options())

    async def __aexit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        self._stop.set()
        if error_type is not None:  # the test failed: do not wait for the last job to finish
            for task in self._tasks:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()

    def _channel(self, client: int) -> grpc.aio.Channel:
        return self._channels[1 + client % (len(self._channels) - 1)]

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), random.expovariate(1 / self.shape.think_s))

    async def _client(self, client: int) -> None:
        operations = list(MIX)
        weights = list(MIX.values())
        while not self._stop.is_set():
            operation = random.choices(operations, weights)[0]
            if operation == "key" and self.admin_metadata is None:
                operation = "search_vector"
            try:
                await getattr(self, f"_{operation.split('_')[0]}")(client, operation)
            except Exception as error:  # a defect of the load itself: kept and raised by the test
                self.errors.append(error)
                return
            await self._pause()

    async def _timed(
        self, operation: str, deadline_s: float, call: Callable[[], Awaitable[Any]]
    ) -> tuple[grpc.StatusCode, Any]:
        started = now()
        try:
            answer = await call()
        except grpc.aio.AioRpcError as error:
            self.log.add(CallRecord(operation, started, now() - started, error.code(), deadline_s))
            return error.code(), None
        degraded = bool(getattr(answer, "degraded", False))
        self.log.add(CallRecord(operation, started, now() - started, grpc.StatusCode.OK, deadline_s, degraded))
        return grpc.StatusCode.OK, answer

    async def _search(self, client: int, operation: str) -> None:
        mode = {
            "search_vector": pb.SEARCH_MODE_VECTOR,
            "search_filtered": pb.SEARCH_MODE_VECTOR,
            "search_hybrid": pb.SEARCH_MODE_HYBRID,
            "search_keyword": pb.SEARCH_MODE_KEYWORD,
        }[operation]
        request = pb.SearchRequest(collection=self.collection, query=random.choice(self._texts), top_k=10, mode=mode)
        if operation == "search_filtered":
            request.filter.must.add().field.CopyFrom(pb.FieldCondition(key="salt", eq=Value(string_value=SEED)))
        stub = pb_grpc.SearchServiceStub(self._channel(client))
        await self._timed(
            operation,
            SEARCH_DEADLINE_S,
            lambda: stub.Search(request, metadata=self.metadata, timeout=SEARCH_DEADLINE_S),
        )

    async def _get(self, client: int, operation: str) -> None:
        ids = [f"{SEED}doc-{random.randrange(self.shape.seed_documents):06d}" for _ in range(5)]
        stub = pb_grpc.DocumentServiceStub(self._channel(client))
        request = pb.GetDocumentsRequest(collection=self.collection, ids=ids)
        await self._timed(
            operation,
            SEARCH_DEADLINE_S,
            lambda: stub.GetDocuments(request, metadata=self.metadata, timeout=SEARCH_DEADLINE_S),
        )

    async def _index(self, client: int, operation: str) -> None:
        self._counter += 1
        if self.shape.index_ids is None:
            salt = f"w{client}-{self._counter}-"
        else:
            salt = f"w{self._counter % max(1, self.shape.index_ids // INDEX_BATCH)}-"
        documents = sentences(INDEX_BATCH, salt=salt)
        for document in documents:
            document.text = random.choice(self._texts)
        stub = pb_grpc.DocumentServiceStub(self._channel(client))
        request = pb.IndexDocumentsRequest(collection=self.collection, documents=documents)
        code, _ = await self._timed(
            operation,
            WRITE_DEADLINE_S,
            lambda: stub.IndexDocuments(request, metadata=self.metadata, timeout=WRITE_DEADLINE_S),
        )
        if code == grpc.StatusCode.OK:
            self.written.indexed.update({document.id: content_hash(document) for document in documents})

    async def _key(self, client: int, operation: str) -> None:
        assert self.admin_metadata is not None
        keys = pb_grpc.KeyServiceStub(self._channel(client))
        create = pb.CreateApiKeyRequest(tenant=self.tenant or "load", roles=[pb.ROLE_READ], name=f"churn-{client}")
        code, made = await self._timed(
            "key_create",
            SEARCH_DEADLINE_S,
            lambda: keys.CreateApiKey(create, metadata=self.admin_metadata, timeout=SEARCH_DEADLINE_S),
        )
        if code != grpc.StatusCode.OK:
            return
        revoke = pb.RevokeApiKeyRequest(key_id=made.api_key.key_id)
        for _ in range(10):  # a key left behind is a leak: retry the revocation through faults
            code, _ = await self._timed(
                "key_revoke",
                SEARCH_DEADLINE_S,
                lambda: keys.RevokeApiKey(revoke, metadata=self.admin_metadata, timeout=SEARCH_DEADLINE_S),
            )
            if code in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):
                return
            await asyncio.sleep(1)

    async def _ingest_jobs(self) -> None:
        """Ingest jobs one after another until the load stops (the last one is finished)."""
        channel = self._channels[0]
        round_ = 0
        while not self._stop.is_set():
            salt = f"job{round_}-" if self.shape.ingest_new_ids else "job-"
            documents = sentences(self.shape.ingest_documents, salt=salt)
            try:
                result = await upload(channel, documents, collection=self.ingest_collection, metadata=self.metadata)
            except grpc.aio.AioRpcError as error:  # the api stayed away past the upload's reconnects
                self.errors.append(error)
                return
            self.written.jobs.append(result.job_id)
            job = await wait_job(channel, result.job_id, timeout_s=600, metadata=self.metadata)
            if job.state != pb.JOB_STATE_COMPLETED or job.failed:
                self.written.jobs_failed.append(f"{result.job_id}: {pb.JobState.Name(job.state)}, {job.failed} failed")
            self.written.ingested.update({document.id: content_hash(document) for document in documents})
            round_ += 1
