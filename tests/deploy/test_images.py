"""Smoke test of every image `make images` built (make compose-test runs it before compose.yaml):
each runs as its non-root user, only the embedder carries torch, each service starts from its
image alone (in one pod, so they find each other on localhost, as in a Kubernetes pod network)
and reports SERVING over gRPC health from outside, and each drains and exits 0 on SIGTERM.

Unlike compose.yaml, nothing here depends on compose's service DNS or health-gated start order:
a service that only works because compose waited for it would fail here."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from meshsearch_cli.stack import free_port, wait_serving

TAG = os.environ.get("MESHSEARCH_TAG", "dev")
SERVICE_USER = "10001:10001"
DATABASE_URL = "postgresql://meshsearch:meshsearch@127.0.0.1:5432/meshsearch"


@dataclass(frozen=True)
class Service:
    name: str
    port: int  # its gRPC port inside the pod
    env: dict[str, str]

    @property
    def image(self) -> str:
        return f"localhost/meshsearch-{self.name}:{TAG}"


SERVICES = [
    Service("embedder", 50052, {"MESHSEARCH_EMBEDDER_BACKEND": "torch"}),
    Service("search", 50053, {"MESHSEARCH_SEARCH_DATABASE_URL": DATABASE_URL}),
    Service(
        "api",
        50051,
        {
            "MESHSEARCH_API_EMBEDDER_TARGET": "127.0.0.1:50052",
            "MESHSEARCH_API_SEARCH_TARGET": "127.0.0.1:50053",
            "MESHSEARCH_API_REDIS_URL": "redis://127.0.0.1:6379/0",
            "MESHSEARCH_API_JOBS_DATABASE_URL": DATABASE_URL,
            "MESHSEARCH_API_AUTH_ENABLED": "true",
            "MESHSEARCH_API_BOOTSTRAP_KEY": secrets.token_hex(32),
        },
    ),
    Service(
        "worker",
        50054,
        {
            "MESHSEARCH_WORKER_EMBEDDER_TARGET": "127.0.0.1:50052",
            "MESHSEARCH_WORKER_SEARCH_TARGET": "127.0.0.1:50053",
            "MESHSEARCH_WORKER_JOBS_DATABASE_URL": DATABASE_URL,
        },
    ),
]


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def image_user(image: str) -> str:
    return podman("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_every_service_image_runs_as_its_non_root_user(service: Service) -> None:
    assert image_user(service.image) == SERVICE_USER


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
def test_only_the_embedder_image_carries_torch(service: Service) -> None:
    probe = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') else 3)"
    found = podman("run", "--rm", "--entrypoint", "python", service.image, "-c", probe, check=False)
    assert found.returncode == (0 if service.name == "embedder" else 3), found.stderr


@dataclass
class Pod:
    name: str
    published: dict[str, int]  # service name -> host port of its gRPC port

    def container(self, name: str) -> str:
        return f"{self.name}-{name}"


@pytest.fixture(scope="module")
def pod() -> Iterator[Pod]:
    running = Pod(f"msimg{uuid.uuid4().hex[:6]}", {service.name: free_port() for service in SERVICES})
    publish = [f"-p127.0.0.1:{running.published[s.name]}:{s.port}" for s in SERVICES]
    podman("pod", "create", "--name", running.name, *publish)
    try:
        podman(
            "run", "-d", "--pod", running.name, "--name", running.container("postgres"),
            "-e", "POSTGRES_USER=meshsearch", "-e", "POSTGRES_PASSWORD=meshsearch", "-e", "POSTGRES_DB=meshsearch",
            f"localhost/meshsearch-postgres:{TAG}",
        )  # fmt: skip
        podman(
            "run", "-d", "--pod", running.name, "--name", running.container("redis"),
            f"localhost/meshsearch-redis:{TAG}", "redis-server", "--save", "", "--appendonly", "no",
        )  # fmt: skip
        for service in SERVICES:
            env = [f"-e{name}={value}" for name, value in service.env.items()]
            podman("run", "-d", "--pod", running.name, "--name", running.container(service.name), *env, service.image)
        yield running
    finally:
        for service in SERVICES:
            print(podman("logs", "--tail", "15", running.container(service.name), check=False).stderr[-3000:])
        podman("pod", "rm", "-f", "-t", "5", running.name, check=False)


def test_each_service_image_serves_grpc_health_on_its_own(pod: Pod) -> None:
    for service in SERVICES:  # in start order: the embedder loads the model, the rest need it
        wait_serving(f"127.0.0.1:{pod.published[service.name]}", 300)


def test_each_service_image_drains_and_exits_zero_on_sigterm(pod: Pod) -> None:
    for service in reversed(SERVICES):  # the worker and the api before their upstreams
        container = pod.container(service.name)
        stopped = podman("stop", "-t", "30", container, timeout=60)
        assert stopped.returncode == 0
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
        printed = podman("logs", container)
        logs = printed.stdout + printed.stderr
        assert exit_code == "0", f"{service.name} exited {exit_code} on SIGTERM: {logs[-2000:]}"
        assert "stopped" in log_messages(logs), f"{service.name} did not log its drained stop: {logs[-2000:]}"


def log_messages(logs: str) -> list[str]:
    """The `msg` of every JSON log line (the services log nothing else)."""
    messages = []
    for line in logs.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            messages.append(str(entry.get("msg", "")))
    return messages
