"""compose.yaml, the Kubernetes overlays and the Dockerfiles configure the services only through
real settings: a misspelled variable would be ignored silently by the service (its settings
ignore unknown names), so it fails here instead; and every deployment gives each service what it
cannot run without, with auth on."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from meshsearch_cli.stack import SETTINGS
from tests.unit.overlays import render_overlay

ROOT = Path(__file__).parents[2]
# What each service cannot do without outside the embedded stack (defaults point at localhost).
# The embedder and the search service serve only callers holding the mesh's caller token.
REQUIRED = {
    "api": {
        "EMBEDDER_TARGET",
        "SEARCH_TARGET",
        "REDIS_URL",
        "STATE_REDIS_URL",
        "JOBS_DATABASE_URL",
        "BOOTSTRAP_KEY",
        "CALLER_TOKEN",
    },
    "worker": {"EMBEDDER_TARGET", "SEARCH_TARGET", "JOBS_DATABASE_URL", "CALLER_TOKEN"},
    "search": {"DATABASE_URL", "CALLERS__TOKEN"},
    "embedder": {"CALLERS__TOKEN"},
}


def is_setting(variable: str) -> bool:
    """Whether a MESHSEARCH_<SERVICE>_... variable names a field (or a nested field) of that
    service's settings."""
    for service, settings in SETTINGS.items():
        prefix = f"MESHSEARCH_{service.upper()}_"
        if variable.startswith(prefix):
            top, _, nested = variable.removeprefix(prefix).lower().partition("__")
            field = settings.model_fields.get(top)
            if field is None:
                return False
            if not nested:
                return True
            model = field.annotation
            return isinstance(model, type) and issubclass(model, BaseModel) and nested in model.model_fields
    return False


def test_the_check_itself_tells_real_settings_from_typos() -> None:
    assert is_setting("MESHSEARCH_API_REDIS_URL") and is_setting("MESHSEARCH_SEARCH_TLS__CLIENT_CA_FILE")
    assert is_setting("MESHSEARCH_API_EMBEDDER_POLICY__TIMEOUT_S")
    assert not is_setting("MESHSEARCH_API_REDIS_URI") and not is_setting("MESHSEARCH_SEARCH_TLS__CA")
    assert not is_setting("MESHSEARCH_SEARCH_REDIS_URL")


def _compose_environments() -> dict[str, dict[str, str]]:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return {name: dict(service.get("environment") or {}) for name, service in compose["services"].items()}


def _k8s_environments(overlay: Path) -> dict[str, set[str]]:
    """The MESHSEARCH_ variables each meshsearch container of a rendered overlay sees."""
    objects = render_overlay(overlay)
    config_maps = {o["metadata"]["name"]: set(o.get("data", {})) for o in objects if o["kind"] == "ConfigMap"}
    seen: dict[str, set[str]] = {}
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            names = {e["name"] for e in container.get("env") or []}
            for source in container.get("envFrom") or []:
                names |= config_maps[source["configMapRef"]["name"]]
            seen[container["name"]] = names
    return seen


def _dockerfile_variables() -> set[str]:
    found: set[str] = set()
    for dockerfile in ROOT.glob("services/*/Dockerfile"):
        found |= set(re.findall(r"\b(MESHSEARCH_[A-Z0-9_]+)=", dockerfile.read_text()))
    return found


def test_every_variable_in_compose_and_the_dockerfiles_is_a_real_setting() -> None:
    variables = {v for env in _compose_environments().values() for v in env} | _dockerfile_variables()
    meshsearch = {v for v in variables if v.startswith("MESHSEARCH_")}
    assert meshsearch, "no MESHSEARCH_ variable found: the check reads the wrong files"
    assert [v for v in meshsearch if not is_setting(v)] == []


@pytest.mark.parametrize("overlay", sorted((ROOT / "k8s" / "overlays").iterdir()), ids=lambda p: p.name)
def test_every_variable_of_a_kubernetes_overlay_is_a_real_setting_and_none_is_missing(overlay: Path) -> None:
    environments = _k8s_environments(overlay)
    assert set(environments) >= set(SETTINGS)
    for service in SETTINGS:
        variables = {v for v in environments[service] if v.startswith("MESHSEARCH_")}
        assert [v for v in variables if not is_setting(v)] == []
        prefix = f"MESHSEARCH_{service.upper()}_"
        missing = {f"{prefix}{r}" for r in REQUIRED[service]} - variables
        assert not missing, (service, missing)


def test_compose_gives_every_service_what_it_needs_with_auth_on() -> None:
    environments: dict[str, Any] = _compose_environments()
    for service in SETTINGS:
        prefix = f"MESHSEARCH_{service.upper()}_"
        missing = {f"{prefix}{r}" for r in REQUIRED[service]} - set(environments[service])
        assert not missing, (service, missing)
    assert environments["api"]["MESHSEARCH_API_AUTH_ENABLED"] == "true"


def test_auth_is_on_in_every_kubernetes_overlay() -> None:
    for overlay in (ROOT / "k8s" / "overlays").iterdir():
        config = next(
            o
            for o in render_overlay(overlay)
            if o["kind"] == "ConfigMap" and "MESHSEARCH_API_AUTH_ENABLED" in o.get("data", {})
        )
        assert config["data"]["MESHSEARCH_API_AUTH_ENABLED"] == "true", overlay.name
