"""TLS on the public port and mutual TLS between services, with certificates this test makes:
a whole stack (api, embedder, search) whose every connection is encrypted, refusing clients
that cannot prove who they are; and a renewed certificate served without a restart."""

from __future__ import annotations

import os
import socket
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from meshsearch.search.v1 import search_pb2, search_pb2_grpc
from meshsearch_cli.stack import EmbeddedStack, Ports
from tests import waiting
from tests.e2e.certificates import Authority, Issued


@dataclass
class TlsStack:
    stack: EmbeddedStack
    authority: Authority
    client: Issued  # the api's: signed by the authority for identity "api", which the services allow
    rogue_client: Issued  # signed by another authority
    intruder: Issued  # signed by the same authority, for a workload the services do not allow
    api_cert: Issued


@pytest.fixture(scope="module")
def tls_stack(stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    directory = tmp_path_factory.mktemp("tls")
    authority = Authority(directory, "mesh")
    server = authority.issue("services", server=True)
    api_cert = authority.issue("api", server=True)
    client = authority.issue("api", server=False, file_stem="api-client")
    intruder = authority.issue("batch-job", server=False)
    rogue_client = Authority(directory, "rogue").issue("rogue-client", server=False)
    mutual = {"CERT_FILE": server.cert_file, "KEY_FILE": server.key_file, "CLIENT_CA_FILE": authority.cert_file}
    env = {
        f"MESHSEARCH_{service}_TLS__{field}": str(path)
        for service in ("EMBEDDER", "SEARCH")
        for field, path in mutual.items()
    }
    env |= {f"MESHSEARCH_{service}_CALLERS__IDENTITIES": '["api"]' for service in ("EMBEDDER", "SEARCH")}
    env |= {
        "MESHSEARCH_API_TLS__CERT_FILE": str(api_cert.cert_file),  # the public port: TLS, no client certificate
        "MESHSEARCH_API_TLS__KEY_FILE": str(api_cert.key_file),
        "MESHSEARCH_API_UPSTREAM_TLS__CA_FILE": str(authority.cert_file),
        "MESHSEARCH_API_UPSTREAM_TLS__CERT_FILE": str(client.cert_file),
        "MESHSEARCH_API_UPSTREAM_TLS__KEY_FILE": str(client.key_file),
        "MESHSEARCH_EMBEDDER_BACKEND": "torch",
        # The stack's health probes speak TLS with a client certificate, like the CLI.
        "MESHSEARCH_TLS_CA_FILE": str(authority.cert_file),
        "MESHSEARCH_TLS_CERT_FILE": str(client.cert_file),
        "MESHSEARCH_TLS_KEY_FILE": str(client.key_file),
    }
    secured = EmbeddedStack(
        directory / "stack",
        Ports.ephemeral(),
        database_url=stack.database_url,
        databases=stack.databases,
        redis_url=stack.redis_url,
        state_redis_url=stack.state_redis_url,
        extra_env=env,
        caller_token="",  # the callers are told apart by their certificates alone
    )
    with secured.running(services=("embedder", "search", "api")):
        yield TlsStack(secured, authority, client, rogue_client, intruder, api_cert)


def _credentials(authority: Authority, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        authority.cert_file.read_bytes(),
        client.key_file.read_bytes() if client else None,
        client.cert_file.read_bytes() if client else None,
    )


def test_the_whole_path_runs_over_tls_and_mutual_tls(tls_stack: TlsStack) -> None:
    """Index and search through the TLS api: its calls to the embedder and the search service
    only succeed with its client certificate, since both require one."""
    name = f"tls_{uuid.uuid4().hex[:8]}"
    target = f"127.0.0.1:{tls_stack.stack.ports.api}"
    with grpc.secure_channel(target, _credentials(tls_stack.authority)) as channel:
        pb_grpc.CollectionServiceStub(channel).CreateCollection(
            pb.CreateCollectionRequest(collection=pb.Collection(name=name)), timeout=60
        )
        pb_grpc.DocumentServiceStub(channel).IndexDocuments(
            pb.IndexDocumentsRequest(collection=name, documents=[pb.Document(id="a", text="encrypted in transit")]),
            timeout=60,
        )
        hits = pb_grpc.SearchServiceStub(channel).Search(
            pb.SearchRequest(collection=name, query="encryption"), timeout=60
        )
    assert [hit.document.id for hit in hits.hits] == ["a"]


def _search_health(target: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    opened = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with opened as channel:
        try:
            search_pb2_grpc.VectorStoreServiceStub(channel).ListCollections(
                search_pb2.ListCollectionsRequest(), timeout=5
            )
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_services_refuse_clients_that_cannot_prove_who_they_are(tls_stack: TlsStack) -> None:
    search = f"127.0.0.1:{tls_stack.stack.ports.search}"
    api = f"127.0.0.1:{tls_stack.stack.ports.api}"
    authority = tls_stack.authority
    assert _search_health(search, _credentials(authority, tls_stack.client)) == grpc.StatusCode.OK
    assert _search_health(search, None) == grpc.StatusCode.UNAVAILABLE  # plaintext
    assert _search_health(search, _credentials(authority)) == grpc.StatusCode.UNAVAILABLE  # no client certificate
    assert _search_health(search, _credentials(authority, tls_stack.rogue_client)) == grpc.StatusCode.UNAVAILABLE
    # Signed by the mesh's own CA, but for a workload the search service does not serve.
    assert _search_health(search, _credentials(authority, tls_stack.intruder)) == grpc.StatusCode.PERMISSION_DENIED
    embedder = f"127.0.0.1:{tls_stack.stack.ports.embedder}"
    for caller, expected in (
        (tls_stack.client, grpc.StatusCode.OK),
        (tls_stack.intruder, grpc.StatusCode.PERMISSION_DENIED),
    ):
        with grpc.secure_channel(embedder, _credentials(authority, caller)) as channel:
            try:
                embedder_pb2_grpc.EmbedderServiceStub(channel).Info(embedder_pb2.InfoRequest(), timeout=10)
                code = grpc.StatusCode.OK
            except grpc.RpcError as error:
                code = error.code()
                assert "batch-job" in (error.details() or ""), "the refusal names who was refused"
        assert code == expected
    with grpc.insecure_channel(api) as channel:
        with pytest.raises(grpc.RpcError) as plaintext:
            pb_grpc.CollectionServiceStub(channel).ListCollections(pb.ListCollectionsRequest(), timeout=5)
    assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE


def _served_serial(port: int, ca_file: Path) -> int:
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_a_renewed_certificate_is_served_without_a_restart(tls_stack: TlsStack) -> None:
    port = tls_stack.stack.ports.api
    before = _served_serial(port, tls_stack.authority.cert_file)
    assert before == tls_stack.api_cert.serial
    process = tls_stack.stack.processes["api"]
    # Written beside the files in use, then moved over them, as a Secret volume update is.
    renewed = tls_stack.authority.issue("api", server=True, file_stem="api-renewed")
    os.replace(renewed.key_file, tls_stack.api_cert.key_file)
    os.replace(renewed.cert_file, tls_stack.api_cert.cert_file)
    waiting.until_sync(
        lambda: _served_serial(port, tls_stack.authority.cert_file) == renewed.serial,
        timeout_s=10,
        what="the renewed certificate is served",
    )
    assert process.poll() is None  # same process, new certificate
