"""Every port is defined once, by its service's settings (MESHSEARCH_<SERVICE>_PORT and
_METRICS_PORT defaults): the Dockerfiles, compose.yaml and the Kubernetes manifests must say the
same numbers, or an image would expose, probe or be called on a port nothing listens on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshsearch_cli.stack import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
PORTS = {
    name: (cls.model_fields["port"].default, cls.model_fields["metrics_port"].default) for name, cls in SETTINGS.items()
}
DOCKERFILE = {"api": "services/api/Dockerfile", "worker": "services/api/Dockerfile"}


def dockerfile_stage(service: str) -> str:
    text = (ROOT / DOCKERFILE.get(service, f"services/{service}/Dockerfile")).read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    named = [stage for stage in stages if re.match(rf"\S+ AS {service}\b", stage)]
    return named[0] if named else stages[-1]


@pytest.mark.parametrize("service", sorted(PORTS))
def test_each_image_exposes_and_probes_its_settings_ports(service: str) -> None:
    stage = dockerfile_stage(service)
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", stage, re.M).group(1).split()}  # type: ignore[union-attr]
    probed = int(re.search(r'healthcheck", "(\d+)"', stage).group(1))  # type: ignore[union-attr]
    port, metrics_port = PORTS[service]
    assert exposed == {port, metrics_port} and probed == port


def test_compose_probes_and_calls_each_service_on_its_settings_port() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name, (port, _) in PORTS.items():
        assert services[name]["healthcheck"]["test"][-1] == str(port), name
    for name, service in services.items():
        for variable, value in (service.get("environment") or {}).items():
            if variable.endswith("_TARGET"):
                upstream = variable.removesuffix("_TARGET").rsplit("_", 1)[-1].lower()
                assert str(value).endswith(f":{PORTS[upstream][0]}"), (name, variable, value)
    assert any(str(mapping).endswith(f":{PORTS['api'][0]}") for mapping in services["api"]["ports"])


def _manifests() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((ROOT / "k8s" / "base").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def test_kubernetes_ports_probes_services_and_targets_agree_with_the_settings() -> None:
    documents = _manifests()
    checked = set()
    for doc in documents:
        name = doc.get("metadata", {}).get("name", "").removeprefix("meshsearch-")
        if name not in PORTS:
            continue
        port, metrics_port = PORTS[name]
        if doc["kind"] == "Deployment":
            template = doc["spec"]["template"]
            assert template["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port), name
            container = template["spec"]["containers"][0]
            assert {p["containerPort"] for p in container["ports"]} == {port, metrics_port}, name
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    assert container[probe]["grpc"]["port"] == port, (name, probe)
            checked.add(name)
        if doc["kind"] == "Service":
            assert [p["port"] for p in doc["spec"]["ports"]] == [port], name
    assert checked == set(PORTS)
    config = next(
        doc for doc in documents if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "meshsearch-config"
    )
    targets = {k: v for k, v in config["data"].items() if k.endswith("_TARGET")}
    assert targets
    for variable, value in targets.items():
        upstream = variable.removesuffix("_TARGET").rsplit("_", 1)[-1].lower()
        assert value.endswith(f":{PORTS[upstream][0]}"), (variable, value)
