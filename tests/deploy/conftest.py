"""Fixtures of the deploy tier: the tools venv and the overlays rendered once per session."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import REPO, DeployTools, ensure_deploy_tools

K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "deploy: renders, validates and scans deploy/ with the tools in .venv-deploy"
    )


@pytest.fixture(scope="session")
def deploy_tools() -> DeployTools:
    return ensure_deploy_tools()


class Rendered:
    """One overlay as `kubectl kustomize` renders it: the YAML file and its documents."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]

    def of_kind(self, kind: str) -> list[dict]:
        return [doc for doc in self.docs if doc["kind"] == kind]

    def one(self, kind: str, name: str) -> dict:
        found = [doc for doc in self.of_kind(kind) if doc["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.name}: expected one {kind}/{name}, found {len(found)}"
        return found[0]


def render(tools: DeployTools, overlay: Path, out: Path) -> Path:
    done = subprocess.run([str(tools.kubectl), "kustomize", str(overlay)], capture_output=True, text=True)
    assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
    out.write_text(done.stdout)
    return out


@pytest.fixture(scope="session")
def rendered(deploy_tools, tmp_path_factory) -> dict[str, Rendered]:
    out = tmp_path_factory.mktemp("rendered")
    found = {
        name: Rendered(name, render(deploy_tools, K8S / "overlays" / name, out / f"{name}.yaml"))
        for name in OVERLAYS
    }
    found["base"] = Rendered("base", render(deploy_tools, K8S / "base", out / "base.yaml"))
    return found
