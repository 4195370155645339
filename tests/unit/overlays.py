"""The Kubernetes overlays, rendered as kustomize renders them for `kubectl apply -k`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"
OVERLAYS = sorted((ROOT / "k8s" / "overlays").iterdir())


def render_overlay(overlay: Path) -> list[dict[str, Any]]:
    """Every object of `overlay`. The dev overlay's Secret comes from a file never committed,
    made with random values when missing (what `make k8s-dev-secrets` does)."""
    subprocess.run([str(ROOT / "tools" / "build" / "k8s_dev_secrets.sh")], check=True, capture_output=True)
    out = subprocess.run([str(KUBECTL), "kustomize", str(overlay)], capture_output=True, text=True, check=True)
    return [o for o in yaml.safe_load_all(out.stdout) if o]
