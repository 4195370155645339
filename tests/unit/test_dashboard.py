"""The Grafana dashboard (k8s/base/dashboards/meshsearch.json) is what its builder makes, loads
into Grafana's dashboard schema (the Grafana Foundation SDK's models) without losing a key, and
asks only for metrics and labels the services export."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from tests.unit.metrics_registry import registered_metrics

ROOT = Path(__file__).parents[2]
COMMITTED = ROOT / "k8s" / "base" / "dashboards" / "meshsearch.json"
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("dashboard", ROOT / "tools" / "build" / "dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _queries() -> list[str]:
    panels = json.loads(COMMITTED.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets") or ()]


def test_the_committed_dashboard_is_what_the_builder_makes() -> None:
    assert COMMITTED.read_text() == _builder().render(), "run `make dashboard` and commit the result"


def test_it_loads_into_grafanas_dashboard_schema_without_losing_a_key() -> None:
    committed = json.loads(COMMITTED.read_text())
    loaded = Dashboard.from_json(committed)
    assert json.loads(json.dumps(loaded, cls=JSONEncoder)) == committed
    assert loaded.uid == "meshsearch-overview" and len(committed["panels"]) >= 15
    misspelled = dict(committed, panels=[{**committed["panels"][1], "targest": []}])  # the check can fail
    assert json.loads(json.dumps(Dashboard.from_json(misspelled), cls=JSONEncoder)) != misspelled


def test_every_query_names_a_metric_and_labels_the_services_export() -> None:
    exported = registered_metrics()
    queries = _queries()
    assert len(queries) >= 15
    for query in queries:
        for series in re.findall(r"\bmeshsearch_[a-z0-9_]+", query):
            name = HISTOGRAM_SERIES.sub("", series)
            assert name in exported or series in exported, f"{series} in {query!r} is not exported"
            labels = set(exported.get(name, exported.get(series, ())))
            for grouped in re.findall(r"by \(([^)]*)\)", query):
                used = {label.strip() for label in grouped.split(",")} - {"le"}
                assert used <= labels | {"job", "instance", "pod", "namespace"}, (query, used, labels)
    assert any("meshsearch_embedder_queue_seconds" in q for q in queries)  # the autoscaling signal is shown
