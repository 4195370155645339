"""compose.yaml run for real (make compose-test): podman-compose brings the mesh up on the images
`make images` built (PostgreSQL and Redis included, from Debian's packages), with auth on. The
test makes a tenant key with the bootstrap key, loads the demo's corpus through an ingest job
(the worker stores it), answers the demo's queries, scales the embedder to two replicas and
checks that both serve, then tears everything down."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from meshsearch.api.v1 import api_pb2 as pb
from meshsearch.api.v1 import api_pb2_grpc as pb_grpc
from meshsearch_cli.corpus import stdlib_docstrings
from meshsearch_cli.demo import QUERIES
from meshsearch_cli.stack import free_port, wait_serving

ROOT = Path(__file__).parents[2]
COMPOSE = [sys.executable, "-m", "podman_compose"]
TAG = os.environ.get("MESHSEARCH_TAG", "dev")
EMBED_OK = re.compile(
    r'meshsearch_rpc_handled_total\{code="OK",method="/meshsearch.embedder.v1.EmbedderService/Embed"\} (\d+)'
)


class Mesh:
    def __init__(self, project: str, port: int, bootstrap_key: str) -> None:
        self.project, self.port, self.bootstrap_key = project, port, bootstrap_key
        self.env = {
            **os.environ,
            "MESHSEARCH_TAG": TAG,
            "MESHSEARCH_POSTGRES_IMAGE": f"localhost/meshsearch-postgres:{TAG}",
            "MESHSEARCH_REDIS_IMAGE": f"localhost/meshsearch-redis:{TAG}",
            "MESHSEARCH_BOOTSTRAP_KEY": bootstrap_key,
            "MESHSEARCH_POSTGRES_PASSWORD": secrets.token_hex(16),
            "MESHSEARCH_REDIS_PASSWORD": secrets.token_hex(16),
            "MESHSEARCH_POSTGRES_SEARCH_PASSWORD": secrets.token_hex(16),
            "MESHSEARCH_POSTGRES_JOBS_PASSWORD": secrets.token_hex(16),
            "MESHSEARCH_CALLER_TOKEN": secrets.token_hex(32),
            "MESHSEARCH_API_PUBLISH": f"127.0.0.1:{port}",
            "MESHSEARCH_EMBEDDER_MAX_CONNECTION_AGE_S": "5",
        }

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COMPOSE, "-f", str(ROOT / "compose.yaml"), "-p", self.project, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def containers(self, service: str) -> list[str]:
        listed = subprocess.run(
            ["podman", "ps", "--format", "json", "--filter", f"label=io.podman.compose.project={self.project}"],
            capture_output=True,
            text=True,
            check=True,
        )
        return sorted(
            c["Names"][0]
            for c in json.loads(listed.stdout or "[]")
            if c.get("Labels", {}).get("com.docker.compose.service") == service
        )

    def remove_leftovers(self) -> None:
        """podman-compose `down` removes as many replicas as compose.yaml declares, so the ones
        `--scale` added outlive it (with the network and volumes they hold): remove every
        container of the project, then what `down` could not."""
        label = f"label=io.podman.compose.project={self.project}"
        # Containers first: they hold the networks and volumes.
        for kind, list_all in (("container", ["--all"]), ("network", []), ("volume", [])):
            listed = subprocess.run(
                ["podman", kind, "ls", "--quiet", *list_all, "--filter", label],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            if names := listed.stdout.split():
                subprocess.run(["podman", kind, "rm", "--force", *names], capture_output=True, check=False, timeout=120)

    def embed_calls(self, container: str) -> int:
        body = subprocess.run(
            ["podman", "exec", container, "python", "-c",
             "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9092/metrics').read().decode())"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        found = EMBED_OK.search(body)
        return int(float(found.group(1))) if found else 0


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    running = Mesh(f"mstest{uuid.uuid4().hex[:6]}", free_port(), secrets.token_hex(32))
    try:
        up = running.compose("up", "-d", timeout=900)
        assert up.returncode == 0, up.stdout + up.stderr
        wait_serving(f"127.0.0.1:{running.port}", 600)
        yield running
    finally:
        # Shown by pytest when a test failed: each service's own tail, so that a quiet one is
        # not pushed out of sight by a chatty one.
        for service in ("embedder", "search", "api", "worker", "postgres", "certs"):
            logs = running.compose("logs", "--tail", "25", service, timeout=120)
            print(f"--- {service} ---\n{(logs.stdout + logs.stderr)[-3000:]}")
        listed = running.compose("ps", "-a", timeout=60)
        print((listed.stdout + listed.stderr)[-3000:])
        running.compose("down", "-v", "-t", "10", timeout=300)
        running.remove_leftovers()


def _meshsearch(mesh: Mesh, key: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESHSEARCH_TARGET": f"127.0.0.1:{mesh.port}", "MESHSEARCH_API_KEY": key, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "meshsearch_cli", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_the_mesh_from_compose_indexes_answers_and_scales_the_embedder(mesh: Mesh, tmp_path: Path) -> None:
    deadline = time.monotonic() + 120
    while True:  # the api serves before its jobs database (where keys live) is open: exit 69
        made = _meshsearch(
            mesh, mesh.bootstrap_key, "keys", "create", "--tenant", "demo", "--role", "read", "--role", "write"
        )
        if made.returncode != 69 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    anonymous = _meshsearch(mesh, "", "collections", "list")
    assert anonymous.returncode == 77, "auth must be on in compose"

    documents = stdlib_docstrings(400)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d.id, "text": d.text}) + "\n" for d in documents))
    deadline = time.monotonic() + 300
    while True:  # the embedder may still be loading (UNAVAILABLE, exit 69)
        ingested = _meshsearch(mesh, key, "ingest", str(corpus), "-c", "stdlib_docs", "--create")
        if ingested.returncode != 69 or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert ingested.returncode == 0, ingested.stdout + ingested.stderr
    answers = [_meshsearch(mesh, key, "search", query, "-c", "stdlib_docs") for query in QUERIES[:3]]
    assert all(a.returncode == 0 for a in answers), [a.stderr for a in answers]
    assert "argparse" in answers[0].stdout  # "parse command line options and arguments"

    scaled = mesh.compose("up", "-d", "--scale", "embedder=2", timeout=600)
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    replicas = mesh.containers("embedder")
    assert len(replicas) == 2, replicas
    with grpc.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        wait_serving(f"127.0.0.1:{mesh.port}", 300)
        search = pb_grpc.SearchServiceStub(channel)
        before = {replica: mesh.embed_calls(replica) for replica in replicas}
        deadline = time.monotonic() + 240
        while True:  # until the api's connections have been re-established to both replicas
            for i in range(10):
                search.Search(
                    pb.SearchRequest(collection="stdlib_docs", query=f"question {i} {uuid.uuid4().hex}"),
                    metadata=(("authorization", f"Bearer {key}"),),
                    timeout=60,
                )
            served = {replica: mesh.embed_calls(replica) - before[replica] for replica in replicas}
            if min(served.values()) > 0:
                break
            assert time.monotonic() < deadline, f"one embedder replica never served: {served}"
            time.sleep(2)


FOREIGN_CALLS = """
from pathlib import Path
import grpc
from meshsearch.embedder.v1 import embedder_pb2, embedder_pb2_grpc
from meshsearch.search.v1 import search_pb2, search_pb2_grpc
tls = Path("/etc/meshsearch/tls")
certified = grpc.ssl_channel_credentials(*(tls.joinpath(n).read_bytes() for n in ("ca.crt", "tls.key", "tls.crt")))
calls = {
    "search:50053": lambda c: search_pb2_grpc.VectorStoreServiceStub(c).ListCollections(
        search_pb2.ListCollectionsRequest(), timeout=20),
    "embedder:50052": lambda c: embedder_pb2_grpc.EmbedderServiceStub(c).Embed(
        embedder_pb2.EmbedRequest(texts=["hello"]), timeout=20),
}
for target, call in calls.items():
    for how, channel in (("plaintext", grpc.insecure_channel(target)),
                         ("certificate", grpc.secure_channel(target, certified))):
        with channel:
            try:
                call(channel)
                print(target, how, "OK")
            except grpc.RpcError as error:
                print(target, how, error.code().name)
"""


def test_a_container_that_is_not_the_api_or_a_worker_is_refused_by_search_and_embedder(mesh: Mesh) -> None:
    """Another workload on the compose network reaches the internal ports: in plaintext it cannot
    even connect (mutual TLS), and with a certificate the mesh's CA signed, but for another
    identity (the embedder's own, which is on neither allow-list), both services refuse it
    before reading its request. The api keeps serving."""
    network, image = f"{mesh.project}_default", f"localhost/meshsearch-api:{TAG}"
    certificate = f"{mesh.project}_tls-embedder:/etc/meshsearch/tls:ro"
    foreign = subprocess.run(
        ["podman", "run", "--rm", "--network", network, "-v", certificate, "--entrypoint", "python", image,
         "-c", FOREIGN_CALLS],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert foreign.returncode == 0, foreign.stderr
    assert foreign.stdout.splitlines() == [
        "search:50053 plaintext UNAVAILABLE",
        "search:50053 certificate PERMISSION_DENIED",
        "embedder:50052 plaintext UNAVAILABLE",
        "embedder:50052 certificate PERMISSION_DENIED",
    ]
    made = _meshsearch(mesh, mesh.bootstrap_key, "keys", "create", "--tenant", "foreign", "--role", "read")
    assert made.returncode == 0, made.stderr
    listed = _meshsearch(mesh, made.stdout.strip(), "collections", "list")
    assert listed.returncode == 0, listed.stderr
