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
