"""docs/operations.md lists every Prometheus metric the services register, with its labels."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from prometheus_client import REGISTRY

DOC = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
SUFFIX = {"counter": "_total", "info": "_info"}


def _registered() -> dict[str, tuple[str, ...]]:
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


def test_every_metric_is_documented_with_its_labels() -> None:
    registered = _registered()
    assert len(registered) >= 25
    for name, labels in registered.items():
        row = next((line for line in DOC.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is not in docs/operations.md"
        documented = row.split("|")[3].strip()
        assert documented == (", ".join(labels) or "—"), (name, documented, labels)
