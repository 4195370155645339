"""docs/configuration.md is the one place every setting is documented; keep it complete."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from meshsearch_api.settings import ApiSettings, WorkerSettings
from meshsearch_common.callers import CallerPolicy
from meshsearch_common.settings import ServiceSettings, UpstreamPolicy
from meshsearch_common.tls import ClientTls, ServerTls
from meshsearch_common.tracing import TracingSettings
from meshsearch_embedder.settings import EmbedderSettings
from meshsearch_search.settings import SearchSettings

DOC = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
SHARED = set(ServiceSettings.model_fields)


@pytest.mark.parametrize("settings", [ApiSettings, EmbedderSettings, SearchSettings, WorkerSettings])
def test_every_service_setting_is_documented(settings: type[BaseSettings]) -> None:
    prefix = settings.model_config["env_prefix"]
    for field in settings.model_fields:
        if field in ("tls", "tracing", "callers"):
            assert f"`{field.upper()}__<FIELD>`" in DOC, field
        elif field in SHARED:
            assert f"`{field.upper()}`" in DOC, field
        elif field.endswith("_policy") or field == "upstream_tls":
            assert f"`{prefix}{field.upper()}__<FIELD>`" in DOC, field
        else:
            assert f"`{prefix}{field.upper()}`" in DOC, field


@pytest.mark.parametrize("nested", [UpstreamPolicy, ServerTls, ClientTls, TracingSettings, CallerPolicy])
def test_every_field_of_a_nested_setting_is_documented(nested: type[BaseModel]) -> None:
    for field in nested.model_fields:
        assert f"`{field.upper()}`" in DOC, field
