"""docs/architecture.md's map of concerns to modules stays true: every module and path it names
exists in the tree, so the map cannot drift from the code unnoticed."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAP = (ROOT / "docs" / "architecture.md").read_text()
TABLE = MAP[MAP.index("## Where each concern lives") : MAP.index("Each service has the same shape:")]
NAMED = re.findall(r"`([^`]+)`", TABLE)
MODULE = re.compile(r"^(meshsearch(?:_\w+)?(?:\.\w+)+|meshsearch_\w+)$")
PATH = re.compile(r"^[\w.-]+(/[\w.*-]*)+$")


def test_every_module_the_map_names_exists() -> None:
    modules = [name for name in NAMED if MODULE.match(name)]
    assert len(modules) > 60, modules  # the map names the tree, not a handful of places
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    assert not missing, f"docs/architecture.md names modules that do not exist: {missing}"


def test_every_path_the_map_names_exists() -> None:
    paths = [name for name in NAMED if PATH.match(name) and "*" not in name]
    assert len(paths) > 10, paths
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert not missing, f"docs/architecture.md names paths that do not exist: {missing}"
