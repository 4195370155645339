"""The Kubernetes NetworkPolicies allow exactly the architecture's call graph: every overlay
denies by default, and the (caller, callee) pairs its policies open on service ports equal the
ones the services' settings imply (a setting naming an upstream is a call to it). A new
upstream without a policy, or a policy opening a door nobody calls through, fails here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meshsearch_cli.stack import SETTINGS
from tests.unit.overlays import OVERLAYS, render_overlay

ANYONE = "(anyone)"
# Which setting of a service names which upstream.
UPSTREAM_SETTINGS = {
    "embedder_target": "embedder",
    "search_target": "search",
    "redis_url": "redis",
    "state_redis_url": "redis-state",
    "jobs_database_url": "postgres",
    "database_url": "postgres",
}


def call_graph(in_cluster: set[str]) -> set[tuple[str, str]]:
    """(caller, callee) for every upstream a service's settings name, among `in_cluster`; and
    anyone may call the api, the public door."""
    edges = {
        (service, upstream)
        for service, settings in SETTINGS.items()
        for field, upstream in UPSTREAM_SETTINGS.items()
        if field in settings.model_fields and upstream in in_cluster
    }
    if "shard_urls" in SETTINGS["search"].model_fields and "postgres-shard" in in_cluster:
        # The shard servers: written by the search service, read by its database through postgres_fdw.
        edges |= {("search", "postgres-shard"), ("postgres", "postgres-shard")}
    return edges | {(ANYONE, "api")}


def _app(labels: dict[str, str]) -> str:
    return labels.get("app.kubernetes.io/name", "").removeprefix("meshsearch-")


def allowed_graph(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """(caller, callee) pairs the NetworkPolicies open on a port other than `metrics`."""
    edges: set[tuple[str, str]] = set()
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        spec = policy["spec"]
        callee = _app(spec["podSelector"].get("matchLabels", {}))
        for rule in spec.get("ingress", []):
            ports = {str(p.get("port")) for p in rule.get("ports", [])}
            if ports == {"metrics"}:
                continue
            assert callee, f"{policy['metadata']['name']} opens a service port to a set of pods, not one service"
            sources = rule.get("from")
            if not sources:
                edges.add((ANYONE, callee))
                continue
            for source in sources:
                assert "ipBlock" not in source and "namespaceSelector" not in source, policy["metadata"]["name"]
                edges.add((_app(source["podSelector"]["matchLabels"]), callee))
    return edges


@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_the_policies_allow_exactly_the_call_graph(overlay: Path) -> None:
    objects = render_overlay(overlay)
    workloads = {
        _app(o["spec"]["template"]["metadata"]["labels"]) for o in objects if o["kind"] in ("Deployment", "StatefulSet")
    }
    default_deny = [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy" and o["spec"]["podSelector"] == {} and not o["spec"].get("ingress")
    ]
    assert default_deny and "Ingress" in default_deny[0]["spec"]["policyTypes"], "no default deny"
    assert allowed_graph(objects) == call_graph(workloads)


def test_the_graph_is_read_from_the_settings() -> None:
    """The check itself: the graph names each real call, and a missing policy would show."""
    graph = call_graph({"api", "embedder", "search", "worker", "postgres", "redis"})
    assert ("worker", "embedder") in graph and ("search", "postgres") in graph and ("api", "redis") in graph
    assert ("embedder", "search") not in graph and ("worker", "redis") not in graph
