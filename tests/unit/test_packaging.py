"""Each service installs on its own; only the embedder may pull in torch."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sentence-transformers", "transformers", "onnxruntime")


@pytest.mark.parametrize("package", ["libs/common", "services/api", "services/search"])
def test_api_search_and_common_do_not_depend_on_ml_libraries(package: str) -> None:
    project = tomllib.loads((ROOT / package / "pyproject.toml").read_text())["project"]
    dependencies = " ".join(project["dependencies"]).lower()
    assert not any(name in dependencies for name in HEAVY), dependencies


@pytest.mark.parametrize("module", ["meshsearch_api.app", "meshsearch_search.app", "meshsearch_cli"])
def test_importing_the_api_or_search_service_never_loads_torch(module: str) -> None:
    code = f"import sys, {module}; heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; print(heavy)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


SERVICE_AND_TOOLING_PACKAGES = ("meshsearch_api", "meshsearch_embedder", "meshsearch_search", "meshsearch_cli")


def test_no_library_imports_a_service_or_the_operator_tools() -> None:
    import ast

    for path in (ROOT / "libs").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in SERVICE_AND_TOOLING_PACKAGES, f"{path} imports {name}"


def test_a_missing_optional_dependency_names_the_extra_to_install() -> None:
    from meshsearch_cli.stack import MissingExtra, require

    with pytest.raises(MissingExtra, match=r"pip install 'meshsearch-cli\[embedded\]'"):
        require("no_such_module_for_meshsearch", "embedded")


def test_the_public_python_client_loads_no_service_to_service_layer() -> None:
    """The client (clients/python) uses the stubs and the pure contract modules only: no
    breaker, metrics, tracing or server code comes with it into a user's process."""
    layer = ("pybreaker", "prometheus_client", "opentelemetry", "meshsearch_common.client", "meshsearch_common.server")
    code = f"import sys, meshsearch.client; print([m for m in {layer!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
