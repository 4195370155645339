"""docs/operations.md lists every Prometheus metric the services register, with its labels."""

from __future__ import annotations

from pathlib import Path

from tests.unit.metrics_registry import registered_metrics

DOC = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()


def test_every_metric_is_documented_with_its_labels() -> None:
    registered = registered_metrics()
    assert len(registered) >= 25
    for name, labels in registered.items():
        row = next((line for line in DOC.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is not in docs/operations.md"
        documented = row.split("|")[3].strip()
        assert documented == (", ".join(labels) or "—"), (name, documented, labels)
