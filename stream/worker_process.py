"""A `streamrec worker` in a child process: what the demo and the integration tests run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


class WorkerFailed(RuntimeError):
    pass


class WorkerProcess:
    """Starts `python -m stream.cli worker` with STREAMREC_* overrides; waits until it is healthy."""

    def __init__(self, env: dict[str, str], *, log_path: Path, http_port: int, startup_timeout: float = 120.0):
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", **env, "STREAMREC_HTTP_PORT": str(http_port)}
        self.log_path, self.http_port, self.startup_timeout = log_path, http_port, startup_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerFailed(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            health = self.get("/health", quiet=True)
            if health is not None and health.get("assigned_partitions", 0) > 0:
                return self
            time.sleep(0.2)
        self.stop()
        raise WorkerFailed(f"worker not ready after {self.startup_timeout}s:\n{self.log_tail()}")

    def get(self, path: str, *, quiet: bool = False, timeout: float = 10.0, headers: dict | None = None):
        token = self.env.get("STREAMREC_HTTP_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token and headers is None else (headers or {})
        try:
            request = urllib.request.Request(self.url + path, headers=headers)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:  # /health answers 503 with a body while degraded
            try:
                return json.load(exc)
            except json.JSONDecodeError:
                if quiet:
                    return None
                raise
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            if quiet:
                return None
            raise

    def get_text(self, path: str, timeout: float = 10.0) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return response.read().decode()

    def stats(self) -> dict:
        return self.get("/stats")

    def wait_for(self, predicate, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = self.get("/stats", quiet=True)
            if stats is not None and predicate(stats):
                return stats
            if self.proc is not None and self.proc.poll() is not None:
                raise WorkerFailed(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            time.sleep(0.1)
        raise WorkerFailed(f"timed out after {timeout}s waiting for {what}; last stats {stats}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
