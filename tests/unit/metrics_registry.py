"""Every Prometheus metric the services register, with its labels, found by importing every
module of every service (the registry is process-wide)."""

from __future__ import annotations

import importlib
import pkgutil

from prometheus_client import REGISTRY

SUFFIX = {"counter": "_total", "info": "_info"}


def registered_metrics() -> dict[str, tuple[str, ...]]:
    """{exported name (counters with _total, infos with _info): label names}"""
    for package in ("meshsearch_common", "meshsearch_api", "meshsearch_search", "meshsearch_embedder"):
        for module in pkgutil.walk_packages(importlib.import_module(package).__path__, f"{package}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    found = {}
    for collector in list(REGISTRY._collector_to_names):
        name = getattr(collector, "_name", "")
        if name.startswith("meshsearch_"):
            found[name + SUFFIX.get(getattr(collector, "_type", ""), "")] = tuple(getattr(collector, "_labelnames", ()))
    return found
