"""Every public and internal RPC, fed requests generated from the protos' descriptors.

Each service of a live mesh (auth off, so requests reach the code behind the door) gets
`CASES` generated requests spread over all its methods. None may end UNKNOWN or INTERNAL;
afterwards every service still answers its health check, and a sentinel collection that no
generated request can name holds exactly what it held before. `make test` runs a short form;
`make fuzz` (MESHSEARCH_FUZZ=full) runs 10,000 cases per service.
"""

from __future__ import annotations

import os
import uuid

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from meshsearch.api.v1 import api_pb2 as api_pb
from meshsearch.api.v1 import api_pb2_grpc
from meshsearch.embedder.v1 import embedder_pb2 as embedder_pb
from meshsearch.search.v1 import search_pb2 as search_pb
from meshsearch.search.v1 import search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack
from tests.fuzz.calls import Tally, call, methods
from tests.fuzz.messages import messages

FULL = os.environ.get("MESHSEARCH_FUZZ") == "full"
CASES = int(os.environ.get("MESHSEARCH_FUZZ_CASES", 10_000 if FULL else 1_000))
CALL_TIMEOUT_S = 10.0
PLAYGROUND = "fuzz_play"  # generated requests name it, so they reach past NOT_FOUND

SERVICES = {
    "api": methods(*api_pb.DESCRIPTOR.services_by_name.values()),
    "search": methods(*search_pb.DESCRIPTOR.services_by_name.values()),
    "embedder": methods(*embedder_pb.DESCRIPTOR.services_by_name.values()),
}


def ensure_playground(api: grpc.Channel) -> None:
    """The collection generated requests play in, with a few documents (made again when a
    generated DeleteCollection removed it)."""
    try:
        api_pb2_grpc.CollectionServiceStub(api).CreateCollection(
            api_pb.CreateCollectionRequest(collection=api_pb.Collection(name=PLAYGROUND)), timeout=60
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    documents = [api_pb.Document(id=str(i), text=f"playground document {i} about tides") for i in range(3)]
    api_pb2_grpc.DocumentServiceStub(api).IndexDocuments(
        api_pb.IndexDocumentsRequest(collection=PLAYGROUND, documents=documents), timeout=60
    )


def snapshot(search: grpc.Channel, name: str, ids: list[str]) -> list[bytes]:
    """Every stored point of the sentinel, vectors included, as bytes to compare."""
    got = search_pb2_grpc.VectorStoreServiceStub(search).Get(
        search_pb.GetRequest(collection=name, ids=ids, include_vectors=True), timeout=30
    )
    return sorted(point.SerializeToString(deterministic=True) for point in got.points)


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_generated_requests_never_end_unknown_or_internal(stack: EmbeddedStack, service: str) -> None:
    api = grpc.insecure_channel(f"127.0.0.1:{stack.ports.api}")
    search = stack.sync_channel("search")
    target = grpc.insecure_channel(f"127.0.0.1:{getattr(stack.ports, service)}")
    sentinel = f"sentinel_{uuid.uuid4().hex[:12]}"  # random: no generated request can spell it
    ids = [f"s{i}" for i in range(5)]
    api_pb2_grpc.CollectionServiceStub(api).CreateCollection(
        api_pb.CreateCollectionRequest(collection=api_pb.Collection(name=sentinel)), timeout=60
    )
    api_pb2_grpc.DocumentServiceStub(api).IndexDocuments(
        api_pb.IndexDocumentsRequest(
            collection=sentinel, documents=[api_pb.Document(id=i, text=f"sentinel text {i}") for i in ids]
        ),
        timeout=60,
    )
    before = snapshot(search, sentinel, ids)
    ensure_playground(api)
    tally = Tally()

    def fuzz(method: MethodDescriptor) -> None:
        @settings(
            max_examples=max(1, CASES // len(SERVICES[service])),
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(st.data())
        def one_call(data: st.DataObject) -> None:
            most = 3 if method.client_streaming else 1
            requests = data.draw(st.lists(messages(method.input_type, (PLAYGROUND,)), min_size=1, max_size=most))
            tally.record(method, requests, call(target, method, requests, CALL_TIMEOUT_S))
            if method.name == "DeleteCollection":
                ensure_playground(api)

        one_call()

    try:
        for method in SERVICES[service]:  # each its share: hypothesis' own choice of one is far from even
            fuzz(method)
        print(f"\n{service}: {sum(tally.codes.values())} calls\n{tally.summary()}")
        assert not tally.defects, f"{len(tally.defects)} calls ended UNKNOWN/INTERNAL:\n" + "\n".join(tally.defects)
        for port in (stack.ports.api, stack.ports.search, stack.ports.embedder):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)  # type: ignore[attr-defined]
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert snapshot(search, sentinel, ids) == before and len(before) == len(ids)
    finally:
        for name in (sentinel, PLAYGROUND):  # leave nothing (a deferred index, say) to later tests
            try:
                api_pb2_grpc.CollectionServiceStub(api).DeleteCollection(
                    api_pb.DeleteCollectionRequest(name=name), timeout=60
                )
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        for channel in (api, search, target):
            channel.close()
